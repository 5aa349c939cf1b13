/**
 * Scenario 5: idle agent sessions on one hub — hub memory per session, and how long all of them take
 * to come back after a hub restart (and how many did not).
 * @module
 */

import { registerClusters, round, type Row, rssKiB, startManyAgents } from "./_util.ts";
import { type HubProcess, scratchDir, startHub } from "../tests/helpers/tower_procs.ts";
import { freePort } from "../tests/helpers/net_servers.ts";
import { fetchMetricsText, parseSamples, sampleSum } from "../tests/helpers/metrics_text.ts";

async function waitForConnected(
  hub: HubProcess,
  n: number,
  from: number,
  timeoutMs: number,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const connected = hub.lines.slice(from).filter((l) => l.msg === "agent connected").length;
    if (connected >= n || performance.now() > deadline) return connected;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs the scale scenario for each session count. */
export async function scaleBench(counts: number[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of counts) {
    const dataDir = await scratchDir("bench-scale");
    const { first, logins } = await registerClusters(dataDir, "scale", n);
    const port = await freePort();
    const metricsPort = await freePort();
    let hub = await startHub({
      dataDir,
      port,
      args: ["--audit-log", `${dataDir}/audit.log`, "--metrics-listen", `127.0.0.1:${metricsPort}`],
    });
    await new Promise((r) => setTimeout(r, 1000));
    const baseKiB = rssKiB(hub.child.pid);
    const runner = await startManyAgents({
      hubUrls: [hub.url],
      fingerprint: first.fingerprint,
      caFile: first.caFile,
      logins,
      hubConnections: 2,
      perProcess: n,
      dir: dataDir,
    });
    try {
      const t0 = performance.now();
      const up = await waitForConnected(hub, n, 0, 120_000);
      const connectMs = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2000));
      const loadedKiB = rssKiB(hub.child.pid);
      // Idle for a while longer: the connection storm's garbage is collected, keepalives keep flowing.
      await new Promise((r) => setTimeout(r, 15_000));
      const idleKiB = rssKiB(hub.child.pid);
      // The hub's own account (its /metrics): V8 heap vs memory outside it.
      const samples = parseSamples(await fetchMetricsText(`http://127.0.0.1:${metricsPort}/metrics`));
      const mem = {
        heapUsed: sampleSum(samples, "deno_heap_used_bytes"),
        heapTotal: sampleSum(samples, "deno_heap_total_bytes"),
        external: sampleSum(samples, "deno_external_memory_bytes"),
      };
      // Restart the hub on the same port; the agents come back by themselves.
      await hub.stop();
      const restartAt = performance.now();
      hub = await startHub({
        dataDir,
        port,
        args: ["--audit-log", `${dataDir}/audit.log`, "--metrics-listen", `127.0.0.1:${metricsPort}`],
      });
      const back = await waitForConnected(hub, n, 0, 60_000);
      const reconnectMs = performance.now() - restartAt;
      rows.push({
        scenario: "scale",
        case: `${n} idle agent sessions`,
        firstConnectS: round(connectMs / 1000, 1),
        connected: up,
        hubRssMiB: round(loadedKiB / 1024, 1),
        kibPerSession: round((loadedKiB - baseKiB) / n, 1),
        idleKibPerSession: round((idleKiB - baseKiB) / n, 1),
        heapUsedMiB: round(mem.heapUsed / 2 ** 20, 1),
        heapTotalMiB: round(mem.heapTotal / 2 ** 20, 1),
        externalMiB: round(mem.external / 2 ** 20, 1),
        reconnectAllS: round(reconnectMs / 1000, 1),
        reconnected: back,
        failed: n - back,
      });
    } finally {
      await runner.stop();
      await hub.stop();
      await Deno.remove(dataDir, { recursive: true });
    }
  }
  return rows;
}
