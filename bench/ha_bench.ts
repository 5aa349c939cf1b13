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
import {
  cpuSeconds,
  type ManyAgents,
  registerClusters,
  round,
  type Row,
  rssKiB,
  startManyAgents,
} from "./_util.ts";
import { runJob } from "./proxy_bench.ts";
import type { Target } from "./kube_load.ts";
import { startClusters, type TestCluster } from "../tests/cluster/cluster.ts";
import {
  addCluster,
  type HubProcess,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../tests/helpers/tower_procs.ts";
import { type Haproxy, startHaproxy } from "../tests/helpers/haproxy.ts";
import { fetchMetricsText, parseSamples, sampleSum } from "../tests/helpers/metrics_text.ts";

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

/** Runs the request-rate and peer-hop scenarios, `seconds` of load per row. */
export async function haRequestBench(seconds: number): Promise<Row[]> {
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
      runJob(cluster, { mode: "latency", target, path: one, concurrency, seconds });
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

/** Sizes of the idle-sessions scenario. */
export interface HaSessionsOptions {
  /** Idle agents; each holds 2 tunnels to distinct replicas (2 sessions). */
  agents: number;
  /** Most agents in one agent process. */
  agentsPerProcess: number;
}

/** Longest wait for all sessions to be up, at first and after the restart. */
const sessionsUpTimeoutMs = 300_000;
/** The replicas' drain timeout, and how much longer the bench waits for a drained replica to exit. */
const drainTimeoutS = 30;
const exitGraceMs = 30_000;
/** Agent sessions behind one HAProxy, and its connection cap (see {@link haSessionsBench}). */
const sessionsPerLb = 4000;
const lbMaxconn = 9000;

/**
 * Agent sessions per replica and cluster, counted from the replicas' own log lines ("agent connected" /
 * "agent disconnected"): polling /metrics would cost the replicas a render of a series per cluster each
 * time, which at thousands of clusters is load the benchmark itself would add.
 */
class SessionTally {
  readonly #seen = new Map<HubProcess, { cursor: number; byCluster: Map<string, number> }>();

  #of(hub: HubProcess): Map<string, number> {
    let t = this.#seen.get(hub);
    if (!t) this.#seen.set(hub, t = { cursor: 0, byCluster: new Map() });
    for (; t.cursor < hub.lines.length; t.cursor++) {
      const l = hub.lines[t.cursor]!;
      const step = l.msg === "agent connected" ? 1 : l.msg === "agent disconnected" ? -1 : 0;
      if (step) t.byCluster.set(String(l.cluster), (t.byCluster.get(String(l.cluster)) ?? 0) + step);
    }
    return t.byCluster;
  }

  /** Sessions the replicas hold (parked duplicates too), and clusters held by at least `k` of them. */
  count(hubs: HubProcess[], k: number): { sessions: number; clustersAtK: number } {
    const holders = new Map<string, number>();
    let sessions = 0;
    for (const h of hubs) {
      for (const [c, n] of this.#of(h)) {
        sessions += n;
        if (n > 0) holders.set(c, (holders.get(c) ?? 0) + 1);
      }
    }
    return { sessions, clustersAtK: [...holders.values()].filter((n) => n >= k).length };
  }

  /**
   * Waits (polling the collected lines, bounded by `timeoutMs`) until each of `clusters` clusters is
   * held by 2 distinct replicas; returns how many are.
   */
  async waitForAll(hubs: () => HubProcess[], clusters: number, timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const { clustersAtK } = this.count(hubs(), 2);
      if (clustersAtK >= clusters || performance.now() > deadline) return clustersAtK;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A replica's V8 heap and the memory outside it (its /metrics), in bytes. */
async function memoryOf(hub: HubProcess): Promise<{ heapUsed: number; external: number }> {
  const at = String(hub.lines.find((l) => l.msg === "metrics listening")?.listen);
  const samples = parseSamples(await fetchMetricsText(`http://${at}/metrics`));
  return {
    heapUsed: sampleSum(samples, "deno_heap_used_bytes"),
    external: sampleSum(samples, "deno_external_memory_bytes"),
  };
}

/** Lines of the replicas that say a tunnel or login failed, by message (and reason). */
function hubProblems(hubs: HubProcess[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of hubs) {
    for (const l of h.lines) {
      if (l.level !== "warn" && l.level !== "error" && l.msg !== "agent session closing") continue;
      const key = `${l.msg}${l.reason ? `: ${String(l.reason).slice(0, 50)}` : ""}`;
      out[key] = (out[key] ?? 0) + 1;
    }
  }
  return out;
}

/** Sends SIGTERM and waits for the exit, at most the drain timeout plus a grace; then SIGKILL. */
async function drainAndExit(hub: HubProcess): Promise<{ ms: number; code: number; cpuS: number }> {
  const t = performance.now();
  let cpuS = cpuSeconds(hub.child.pid);
  hub.signal("SIGTERM");
  // The CPU the drain itself spends, read until the process is gone (bounded by the kill below).
  const reader = setInterval(() => {
    try {
      cpuS = cpuSeconds(hub.child.pid);
    } catch { /* exited */ }
  }, 200);
  const killer = setTimeout(() => hub.signal("SIGKILL"), drainTimeoutS * 1000 + exitGraceMs);
  const status = await hub.exited;
  clearTimeout(killer);
  clearInterval(reader);
  return { ms: performance.now() - t, code: status.code, cpuS };
}

/**
 * `agents` idle agents (2 tunnels each) on 3 replicas behind HAProxy: the replicas' RSS growth per
 * session, then a rolling restart with drain (each replica in turn: SIGTERM, wait for exit, start it
 * again on its port) and the time until every cluster is held by 2 replicas again. Every wait is capped.
 */
export async function haSessionsBench(opts: HaSessionsOptions): Promise<Row[]> {
  const dataDir = await scratchDir("bench-ha-idle");
  const { first, logins } = await registerClusters(dataDir, "idle", opts.agents);
  const sessions = opts.agents * 2;
  const args = ["--audit-log", `${dataDir}/audit.log`, "--drain-timeout", `${drainTimeoutS}s`];
  let hubs: HubProcess[] = [];
  const lbs: Haproxy[] = [];
  let agents: ManyAgents;
  let baseKiB = 0;
  try {
    hubs = await startReplicas(dataDir, 3, args);
    // An HAProxy holds two descriptors a connection and may not raise its limit past this machine's 20,000
    // (`ulimit -Hn`): the agents are spread over several, each with room for its share of the sessions, the
    // parked duplicates and the moves of a drain (as behind several load-balancer nodes).
    for (let i = 0; i < Math.ceil(sessions / sessionsPerLb); i++) {
      lbs.push(await startHaproxy({ backends: hubs.map((h) => h.port), tls: true, maxconn: lbMaxconn }));
    }
    await new Promise((r) => setTimeout(r, 1000));
    baseKiB = hubs.reduce((n, h) => n + rssKiB(h.child.pid), 0);
    agents = await startManyAgents({
      hubUrls: lbs.map((lb) => `wss://127.0.0.1:${lb.port}/tunnel`),
      fingerprint: first.fingerprint,
      caFile: first.caFile,
      logins,
      hubConnections: 2,
      perProcess: opts.agentsPerProcess,
      dir: dataDir,
    });
  } catch (e) {
    // Nothing started may outlive a failed set-up.
    for (const lb of lbs) await lb.stop();
    for (const h of hubs) await h.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    throw e;
  }
  const everyHub = [...hubs];
  const ports = hubs.map((h) => h.port);
  const tally = new SessionTally();
  // CPU seconds the replicas and the agents spent (the processes alive now; a drained replica's own
  // is read just before it is stopped).
  const cpu = (procs: number[]) => procs.reduce((n, pid) => n + cpuSeconds(pid), 0);
  let hubCpuGone = 0;
  try {
    const t0 = performance.now();
    const cpu0 = { hubs: cpu(hubs.map((h) => h.child.pid)), agents: cpu(agents.pids) };
    const up = await tally.waitForAll(() => hubs, opts.agents, sessionsUpTimeoutMs);
    const connectMs = performance.now() - t0;
    const cpu1 = { hubs: cpu(hubs.map((h) => h.child.pid)), agents: cpu(agents.pids) };
    // Idle a while: the connection storm's garbage is collected, keepalives keep flowing.
    await new Promise((r) => setTimeout(r, 15_000));
    const idleKiB = hubs.reduce((n, h) => n + rssKiB(h.child.pid), 0);
    const idleSessions = tally.count(hubs, 2).sessions;
    const mem = await Promise.all(hubs.map(memoryOf));
    const agentKiB = agents.pids.reduce((n, pid) => n + rssKiB(pid), 0);
    const rollAt = performance.now();
    const cpu2 = { hubs: cpu(hubs.map((h) => h.child.pid)), agents: cpu(agents.pids) };
    const drainMs: number[] = [];
    const asked: number[] = [];
    const startMs: number[] = [];
    let exitCodes = 0;
    for (let i = 0; i < 3; i++) {
      const { ms, code, cpuS } = await drainAndExit(hubs[i]!);
      hubCpuGone += cpuS;
      drainMs.push(ms);
      asked.push(Number(hubs[i]!.lines.find((l) => l.msg === "hub drained")?.agentsAsked ?? -1));
      exitCodes += code;
      const t = performance.now();
      const [again] = await startReplicas(dataDir, 1, args, [ports[i]!], 3);
      startMs.push(performance.now() - t);
      hubs = hubs.map((h, j) => j === i ? again! : h);
      everyHub.push(again!);
    }
    const lastStartedAt = performance.now();
    const back = await tally.waitForAll(() => hubs, opts.agents, sessionsUpTimeoutMs);
    const rollMs = performance.now() - rollAt;
    const cpu3 = { hubs: cpu(hubs.map((h) => h.child.pid)) + hubCpuGone, agents: cpu(agents.pids) };
    const s = (ms: number) => round(ms / 1000, 1);
    return [{
      scenario: "ha",
      case: `${opts.agents} idle agents x 2 tunnels on 3 replicas`,
      agentProcesses: agents.pids.length,
      loadBalancers: lbs.length,
      clustersUp: up,
      firstConnectS: s(connectMs),
      idleSessions,
      idleKibPerSession: round((idleKiB - baseKiB) / idleSessions, 1),
      heapUsedMiB: round(mem.reduce((n, m) => n + m.heapUsed, 0) / 2 ** 20, 1),
      externalMiB: round(mem.reduce((n, m) => n + m.external, 0) / 2 ** 20, 1),
      agentsRssMiB: round(agentKiB / 1024, 1),
      firstConnectCpuS: `hubs ${round(cpu1.hubs - cpu0.hubs, 1)}, agents ${
        round(cpu1.agents - cpu0.agents, 1)
      }`,
      rollingRestartS: s(rollMs),
      rollCpuS: `hubs ${round(cpu3.hubs - cpu2.hubs, 1)}, agents ${round(cpu3.agents - cpu2.agents, 1)}`,
      drainS: drainMs.map(s).join("/"),
      sessionsMoved: asked.join("/"),
      startS: startMs.map(s).join("/"),
      afterLastStartS: s(performance.now() - lastStartedAt),
      clustersBack: back,
      failed: opts.agents - back,
      nonZeroExits: exitCodes,
      hubProblems: JSON.stringify(hubProblems(everyHub)),
      agentProblems: JSON.stringify(agents.problems()),
    }];
  } finally {
    await agents.stop();
    for (const lb of lbs) await lb.stop();
    for (const h of hubs) await h.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}
