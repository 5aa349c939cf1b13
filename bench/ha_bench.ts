/**
 * Scenario 6: several hub replicas behind HAProxy. (a) The request rate at concurrency 32 with 1, 2 and 3
 * replicas, against the API server directly; (b) the latency a peer hop adds (one request at a time on
 * the replica without the agent vs on the one with it); (c) hub memory per idle agent session spread over
 * 3 replicas, and how long all sessions take to be back after a rolling restart with drain.
 *
 * Replicas share a data dir (file registry, file leases) and talk over peer links; agents and the load
 * generator go through HAProxy, as in tests/e2e/ha_test.ts. Everything runs on one machine, so more
 * replicas add no CPU: the rows show what the extra hop and the balancer cost, not a scale-out.
 * @module
 */

import { Buffer } from "node:buffer";
import YAML from "yaml";
import { round, type Row, rssKiB } from "./_util.ts";
import { runJob } from "./proxy_bench.ts";
import type { Target } from "./kube_load.ts";
import { startClusters, type TestCluster } from "../tests/cluster/cluster.ts";
import {
  addCluster,
  type HubProcess,
  repoRoot,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../tests/helpers/tower_procs.ts";
import { type Haproxy, startHaproxy } from "../tests/helpers/haproxy.ts";
import { hashToken, newToken } from "../lib/registry/mod.ts";
import { FileRegistry } from "../lib/registry/mod.ts";
import { fetchMetricsText, parseSamples, sampleSum } from "../tests/helpers/metrics_text.ts";

/** Sizes of the HA scenarios. */
export interface HaBenchOptions {
  /** Seconds of load per request-rate row. */
  seconds: number;
  /** Idle agents for the memory and rolling-restart rows (each holds 2 tunnels: 2 sessions). */
  idleAgents: number;
}

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  if (r.code !== 0) throw new Error(`main_server.ts ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/**
 * `n` replicas on a shared data dir, each with a peer link and credential-free metrics, once each sees
 * `live` replicas (default `n`; more when others already run).
 */
async function startReplicas(
  dataDir: string,
  n: number,
  extra: string[],
  ports: number[] = [],
  live = n,
): Promise<HubProcess[]> {
  const hubs: HubProcess[] = [];
  for (let i = 0; i < n; i++) {
    hubs.push(
      await startHub({
        dataDir,
        ...(ports[i] ? { port: ports[i] } : {}),
        startTimeoutMs: 90_000,
        args: ["--peer-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", ...extra],
      }),
    );
  }
  await Promise.all(
    hubs.map((h) =>
      h.waitFor(
        (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === live,
        `${live} replicas`,
        60_000,
      )
    ),
  );
  return hubs;
}

/** Agent sessions a replica holds now (its /metrics). */
async function sessionsOf(hub: HubProcess): Promise<number> {
  const at = String(hub.lines.find((l) => l.msg === "metrics listening")?.listen);
  return sampleSum(parseSamples(await fetchMetricsText(`http://${at}/metrics`)), "tower_agent_sessions");
}

/** Polls the replicas' session counts until they sum to `n` or `timeoutMs` passes; returns the sum. */
async function waitForSessions(hubs: HubProcess[], n: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const sum = (await Promise.all(hubs.map((h) => sessionsOf(h).catch(() => 0)))).reduce((a, b) => a + b, 0);
    if (sum >= n || performance.now() > deadline) return sum;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A load-generator target through `port` on the cluster's side of the veth, as a system:masters user. */
async function userTarget(dataDir: string, cluster: TestCluster, port: number): Promise<Target> {
  await must(["user", "add", "bench", "--group", "system:masters", "--data-dir", dataDir]);
  await must(["access", "allow", "--user", "bench", "--clusters", "*", "--data-dir", dataDir]);
  const kc = YAML.parse(
    await must([
      "kubeconfig",
      "--user",
      "bench",
      "--server",
      `https://${cluster.hubAddress}:${port}`,
      "--data-dir",
      dataDir,
    ]),
  ) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, string> }[] };
  const b64 = (s: string | undefined) => Buffer.from(s ?? "", "base64").toString();
  return {
    base: `https://${cluster.hubAddress}:${port}/clusters/${cluster.name}`,
    ca: b64(kc.clusters[0]?.cluster["certificate-authority-data"]),
    cert: b64(kc.users[0]?.user["client-certificate-data"]),
    key: b64(kc.users[0]?.user["client-key-data"]),
  };
}

/** Runs the HA scenarios. */
export async function haBench(opts: HaBenchOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const [cluster] = await startClusters(["ha-bench"]) as [TestCluster];
  try {
    const direct: Target = {
      base: cluster.apiserverUrl,
      ca: await Deno.readTextFile(cluster.caFile),
      token: cluster.tokens.admin!,
    };
    await runJob(cluster, { mode: "seed", target: direct, namespace: "bench", count: 1, sizeBytes: 64 });
    const one = "/api/v1/namespaces/bench/configmaps/cm-0";
    const latency = (target: Target, concurrency: number) =>
      runJob(cluster, { mode: "latency", target, path: one, concurrency, seconds: opts.seconds });
    const d = await latency(direct, 32);
    for (const n of [1, 2, 3]) {
      await withReplicas(cluster, n, 2, async ({ lbTarget }) => {
        const h = await latency(lbTarget, 32);
        rows.push({
          scenario: "ha",
          case: `GET configmap, concurrency 32, ${n} replica(s) behind HAProxy`,
          directRps: Math.round(d.rps!),
          hubRps: Math.round(h.rps!),
          rpsRatio: round(h.rps! / d.rps!),
          hubP50ms: round(h.p50ms!),
          hubP99ms: round(h.p99ms!),
          errors: h.errors!,
        });
      });
    }
    // One agent with one tunnel: one replica holds it, the other carries every request through it.
    await withReplicas(cluster, 2, 1, async ({ replicaTarget, holder }) => {
      const local = await latency(replicaTarget(holder), 1);
      const hop = await latency(replicaTarget(1 - holder), 1);
      rows.push({
        scenario: "ha",
        case: "GET configmap, concurrency 1, through a peer hop",
        localP50ms: round(local.p50ms!),
        peerHopP50ms: round(hop.p50ms!),
        addedP50ms: round(hop.p50ms! - local.p50ms!),
        localP99ms: round(local.p99ms!),
        peerHopP99ms: round(hop.p99ms!),
        errors: local.errors! + hop.errors!,
      });
    });
  } finally {
    await cluster.stop();
  }
  rows.push(await idleSessionsRow(opts.idleAgents));
  return rows;
}

interface ReplicaSet {
  lbTarget: Target;
  replicaTarget(i: number): Target;
  /** Index of a replica holding the agent's tunnel. */
  holder: number;
}

/** `n` replicas behind HAProxy and one agent with `k` tunnels in `cluster`, for the duration of `fn`. */
async function withReplicas(
  cluster: TestCluster,
  n: number,
  k: number,
  fn: (set: ReplicaSet) => Promise<void>,
): Promise<void> {
  const dataDir = await scratchDir("bench-ha");
  let hubs: HubProcess[] = [];
  let lb: Haproxy | undefined;
  let agent: TowerProcess | undefined;
  try {
    const added = await addCluster(dataDir, cluster.name);
    hubs = await startReplicas(dataDir, n, [
      "--listen",
      "0.0.0.0:0",
      "--name",
      cluster.hubAddress,
      "--audit-log",
      `${dataDir}/audit.log`,
    ]);
    lb = await startHaproxy({ backends: hubs.map((h) => h.port), tls: true, bind: "0.0.0.0" });
    const creds = await cluster.agentCredentials();
    agent = startAgent({
      hubUrl: `wss://${cluster.hubAddress}:${lb.port}/tunnel`,
      cluster: cluster.name,
      token: added.token,
      fingerprint: added.fingerprint,
      caFile: added.caFile,
      args: ["--kubernetes", "--sa-dir", creds.saDir, "--hub-connections", String(k)],
      env: creds.env,
      wrap: ["ip", "netns", "exec", cluster.netns],
    });
    await agent.waitFor(
      (l) => l.msg === "connected to hub" && l.tunnels === Math.min(k, n),
      "tunnels",
      60_000,
    );
    const lbTarget = await userTarget(dataDir, cluster, lb.port);
    const holder = hubs.findIndex((h) => h.lines.some((l) => l.msg === "agent connected"));
    await fn({
      lbTarget,
      replicaTarget: (i) => ({
        ...lbTarget,
        base: lbTarget.base.replace(`:${lb!.port}/`, `:${hubs[i]!.port}/`),
      }),
      holder,
    });
  } finally {
    await agent?.stop();
    await lb?.stop();
    for (const h of hubs) await h.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

/**
 * `agents` idle agents (2 tunnels each) on 3 replicas behind HAProxy: the replicas' RSS growth per
 * session, then a rolling restart with drain (each replica in turn: SIGTERM, wait for exit, start it
 * again on its port) and the time until every session is back.
 */
async function idleSessionsRow(agents: number): Promise<Row> {
  const dataDir = await scratchDir("bench-ha-idle");
  const first = await addCluster(dataDir, "idle-0");
  const list = [{ cluster: "idle-0", token: first.token }];
  const more = Array.from(
    { length: agents - 1 },
    (_, i) => ({ cluster: `idle-${i + 1}`, token: newToken() }),
  );
  await new FileRegistry(`${dataDir}/registry.yaml`).update((data) => {
    for (const a of more) {
      data.clusters.push({
        name: a.cluster,
        tokenHash: hashToken(a.token),
        createdAt: new Date().toISOString(),
      });
    }
  });
  list.push(...more);
  const sessions = agents * 2;
  const args = ["--audit-log", `${dataDir}/audit.log`, "--drain-timeout", "30s"];
  let hubs = await startReplicas(dataDir, 3, args);
  const ports = hubs.map((h) => h.port);
  const lb = await startHaproxy({ backends: ports, tls: true });
  const spec = `${dataDir}/agents.json`;
  await Deno.writeTextFile(
    spec,
    JSON.stringify({
      hubUrl: `wss://127.0.0.1:${lb.port}/tunnel`,
      fingerprint: first.fingerprint,
      caFile: first.caFile,
      agents: list,
    }),
  );
  await new Promise((r) => setTimeout(r, 1000));
  const baseKiB = hubs.reduce((n, h) => n + rssKiB(h.child.pid), 0);
  const runner = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/many_agents.ts", spec],
    cwd: repoRoot,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const t0 = performance.now();
    const up = await waitForSessions(hubs, sessions, 300_000);
    const connectMs = performance.now() - t0;
    // Idle a while: the connection storm's garbage is collected, keepalives keep flowing.
    await new Promise((r) => setTimeout(r, 15_000));
    const idleKiB = hubs.reduce((n, h) => n + rssKiB(h.child.pid), 0);
    const rollAt = performance.now();
    const drainMs: number[] = [];
    let exitCodes = 0;
    for (let i = 0; i < 3; i++) {
      const old = hubs[i]!;
      const t = performance.now();
      old.signal("SIGTERM");
      const status = await old.exited;
      drainMs.push(performance.now() - t);
      exitCodes += status.code;
      const [again] = await startReplicas(dataDir, 1, args, [ports[i]!], 3);
      hubs = hubs.map((h, j) => j === i ? again! : h);
    }
    const back = await waitForSessions(hubs, sessions, 300_000);
    const rollMs = performance.now() - rollAt;
    return {
      scenario: "ha",
      case: `${agents} idle agents x 2 tunnels on 3 replicas`,
      sessions: up,
      firstConnectS: round(connectMs / 1000, 1),
      idleKibPerSession: round((idleKiB - baseKiB) / sessions, 1),
      rollingRestartS: round(rollMs / 1000, 1),
      drainS: drainMs.map((m) => round(m / 1000, 1)).join("/"),
      sessionsBack: back,
      failed: sessions - back,
      nonZeroExits: exitCodes,
    };
  } finally {
    runner.kill("SIGKILL");
    await runner.status;
    await lb.stop();
    for (const h of hubs) await h.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}
