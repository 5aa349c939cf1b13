/**
 * Scenarios 2–4: the Kubernetes proxy against the same kube-apiserver directly. A real cluster runs in
 * its own network namespace; the load generator runs inside that namespace for both paths, so only the
 * hub and agent hops differ.
 * @module
 */

import { Buffer } from "node:buffer";
import YAML from "yaml";
import { round, type Row } from "./_util.ts";
import type { Job, Target } from "./kube_load.ts";
import { startTowerEnv, type TowerEnv } from "../tests/e2e/tower_env.ts";
import type { TestCluster } from "../tests/cluster/cluster.ts";
import { repoRoot } from "../tests/helpers/tower_procs.ts";

/** The parts of a hub kubeconfig the load generator needs. */
interface KubeconfigDoc {
  clusters: { cluster: Record<string, string> }[];
  users: { user: Record<string, string> }[];
}

/** Sizes of the proxy scenarios. */
export interface ProxyBenchOptions {
  seconds: number;
  listCount: number;
  watchUpdates: number;
}

/** Runs one load-generator job inside the cluster's network namespace and returns its result. */
export async function runJob(cluster: TestCluster, job: Job): Promise<Record<string, number>> {
  const file = `${cluster.dir}/job-${crypto.randomUUID()}.json`;
  await Deno.writeTextFile(file, JSON.stringify(job));
  const child = cluster.spawnInNetns([Deno.execPath(), "run", "-A", "bench/kube_load.ts", file], {
    cwd: repoRoot,
    stdout: "piped",
    stderr: "piped",
  });
  const out = await child.output();
  if (!out.success) {
    throw new Error(`load generator failed: ${new TextDecoder().decode(out.stderr).slice(-800)}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}

/** A load-generator target for `cluster` through the env's hub, as a new user with full rights. */
export async function hubTarget(env: TowerEnv, cluster: string): Promise<Target> {
  const kc = YAML.parse(
    await Deno.readTextFile(await env.addUser("bench", ["system:masters"], ["*"])),
  ) as KubeconfigDoc;
  const b64 = (s: string | undefined) => Buffer.from(s ?? "", "base64").toString();
  return {
    base: `https://${env.clusters.get(cluster)!.hubAddress}:${env.hub.port}/clusters/${cluster}`,
    ca: b64(kc.clusters[0]?.cluster["certificate-authority-data"]),
    cert: b64(kc.users[0]?.user["client-certificate-data"]),
    key: b64(kc.users[0]?.user["client-key-data"]),
  };
}

/** Runs the latency, large-list and watch scenarios. */
export async function proxyBench(opts: ProxyBenchOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const env = await startTowerEnv({ clusters: ["bench"] });
  try {
    const cluster = env.clusters.get("bench")!;
    const viaHub = await hubTarget(env, "bench");
    const direct: Target = {
      base: cluster.apiserverUrl,
      ca: await Deno.readTextFile(cluster.caFile),
      token: cluster.tokens.admin!,
    };
    // What the agent itself sends: its ServiceAccount token plus impersonation. Separates the API
    // server's cost of impersonation from Tower's own cost.
    const creds = await cluster.agentCredentials();
    const directImpersonating: Target = {
      ...direct,
      token: creds.token,
      headers: { "impersonate-user": "bench", "impersonate-group": "system:masters" },
    };
    await runJob(cluster, { mode: "seed", target: direct, namespace: "bench", count: 1, sizeBytes: 64 });
    const one = "/api/v1/namespaces/bench/configmaps/cm-0";
    for (const concurrency of [1, 32]) {
      const d = await runJob(cluster, {
        mode: "latency",
        target: direct,
        path: one,
        concurrency,
        seconds: opts.seconds,
      });
      const di = await runJob(cluster, {
        mode: "latency",
        target: directImpersonating,
        path: one,
        concurrency,
        seconds: opts.seconds,
      });
      const h = await runJob(cluster, {
        mode: "latency",
        target: viaHub,
        path: one,
        concurrency,
        seconds: opts.seconds,
      });
      rows.push({
        scenario: "latency",
        case: `GET configmap, concurrency ${concurrency}`,
        directP50ms: round(d.p50ms!),
        directImpersonatingP50ms: round(di.p50ms!),
        hubP50ms: round(h.p50ms!),
        addedP50ms: round(h.p50ms! - d.p50ms!),
        directP99ms: round(d.p99ms!),
        directImpersonatingP99ms: round(di.p99ms!),
        hubP99ms: round(h.p99ms!),
        addedP99ms: round(h.p99ms! - d.p99ms!),
        directImpersonatingRps: Math.round(di.rps!),
        directRps: Math.round(d.rps!),
        hubRps: Math.round(h.rps!),
        rpsRatio: round(h.rps! / d.rps!),
        errors: d.errors! + h.errors!,
      });
    }
    await runJob(cluster, {
      mode: "seed",
      target: direct,
      namespace: "bench-list",
      count: opts.listCount,
      sizeBytes: 2048,
    });
    const listPath = "/api/v1/namespaces/bench-list/configmaps";
    const ld = await runJob(cluster, { mode: "list", target: direct, path: listPath, repeat: 5 });
    const lh = await runJob(cluster, { mode: "list", target: viaHub, path: listPath, repeat: 5 });
    rows.push({
      scenario: "large list",
      case: `${opts.listCount} configmaps of 2 KiB`,
      megabytes: round(ld.bytes! / 1e6, 1),
      directMs: round(ld.medianMs!, 1),
      hubMs: round(lh.medianMs!, 1),
      ratio: round(lh.medianMs! / ld.medianMs!),
    });
    const wd = await runJob(cluster, {
      mode: "watch",
      target: direct,
      namespace: "bench",
      name: "watched-direct",
      updates: opts.watchUpdates,
    });
    const wh = await runJob(cluster, {
      mode: "watch",
      target: viaHub,
      namespace: "bench",
      name: "watched-hub",
      updates: opts.watchUpdates,
    });
    rows.push({
      scenario: "watch latency",
      case: `${opts.watchUpdates} updates, event after update response`,
      directP50ms: round(wd.p50ms!),
      hubP50ms: round(wh.p50ms!),
      directP99ms: round(wd.p99ms!),
      hubP99ms: round(wh.p99ms!),
      addedP99ms: round(wh.p99ms! - wd.p99ms!),
    });
  } finally {
    await env.stop();
  }
  return rows;
}
