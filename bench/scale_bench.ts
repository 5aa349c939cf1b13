/**
 * Scenario 5: idle agent sessions on one hub — hub memory per session, and how long all of them take
 * to come back after a hub restart (and how many did not).
 * @module
 */

import { round, type Row, rssKiB } from "./_util.ts";
import { hashToken, newToken } from "../lib/registry/mod.ts";
import { FileRegistry } from "../lib/registry/mod.ts";
import { addCluster, type HubProcess, repoRoot, scratchDir, startHub } from "../tests/helpers/tower_procs.ts";
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
    const first = await addCluster(dataDir, "scale-0");
    const agents = [{ cluster: "scale-0", token: first.token }];
    const more = Array.from({ length: n - 1 }, (_, i) => ({ cluster: `scale-${i + 1}`, token: newToken() }));
    await new FileRegistry(`${dataDir}/registry.yaml`).update((data) => {
      for (const a of more) {
        data.clusters.push({
          name: a.cluster,
          tokenHash: hashToken(a.token),
          createdAt: new Date().toISOString(),
        });
      }
    });
    agents.push(...more);
    const port = await freePort();
    const metricsPort = await freePort();
    let hub = await startHub({
      dataDir,
      port,
      args: ["--audit-log", `${dataDir}/audit.log`, "--metrics-listen", `127.0.0.1:${metricsPort}`],
    });
    const spec = `${dataDir}/agents.json`;
    await Deno.writeTextFile(
      spec,
      JSON.stringify({ hubUrl: hub.url, fingerprint: first.fingerprint, caFile: first.caFile, agents }),
    );
    await new Promise((r) => setTimeout(r, 1000));
    const baseKiB = rssKiB(hub.child.pid);
    const runner = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "bench/many_agents.ts", spec],
      cwd: repoRoot,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
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
      runner.kill("SIGKILL");
      await runner.status;
      await hub.stop();
      await Deno.remove(dataDir, { recursive: true });
    }
  }
  return rows;
}
