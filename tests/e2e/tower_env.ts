/**
 * A whole Tower installation for tests and `deno task dev`: a hub in the root network namespace, real
 * clusters in their own namespaces (unreachable from the hub), and an agent in each cluster running as
 * an in-cluster process would (ServiceAccount token minted with TokenRequest, KUBERNETES_SERVICE_* env).
 * @module
 */

import { join } from "node:path";
import { startClusters, type StartClustersOptions, type TestCluster } from "../cluster/cluster.ts";
import { runCommand } from "../cluster/command_output.ts";
import {
  type AddedCluster,
  auditOf,
  type HubProcess,
  parseIssued,
  repoRoot,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";

/** Options for {@link startTowerEnv}. */
export interface TowerEnvOptions {
  clusters: string[];
  /** Per cluster: hub-side auth mode (`cluster add --mode`). */
  modes?: Record<string, "impersonate" | "passthrough">;
  /** Per cluster: modes the agent accepts (`--auth-modes`). */
  agentModes?: Record<string, string>;
  /** Extra `serve` flags. */
  hubArgs?: string[];
  /** Extra agent flags for every agent. */
  agentArgs?: string[];
  /** Fixed hub port (default any). */
  port?: number;
  clusterOptions?: StartClustersOptions;
}

/** A running installation. */
export interface TowerEnv {
  hub: HubProcess;
  dataDir: string;
  clusters: Map<string, TestCluster>;
  added: Map<string, AddedCluster>;
  agents: Map<string, TowerProcess>;
  /** Starts one more agent for `cluster` (e.g. to replace a killed one). */
  startAgent(cluster: string, name?: string): Promise<TowerProcess>;
  /** Adds a hub user with groups and access to `clusters` globs; returns a kubeconfig path. */
  addUser(name: string, groups: string[], clusters: string[], userAddArgs?: string[]): Promise<string>;
  /** Adds a hub user with a bearer token; returns the token. */
  addTokenUser(name: string, groups: string[], clusters: string[]): Promise<string>;
  /** kubectl from the root namespace (where the hub is) with a kubeconfig. */
  kubectl(
    kubeconfig: string,
    args: string[],
    opts?: { stdin?: string | Uint8Array; env?: Record<string, string>; timeoutMs?: number },
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Starts a long-running kubectl from the root namespace. */
  spawnKubectl(kubeconfig: string, args: string[], env?: Record<string, string>): Deno.ChildProcess;
  kubectlPath: string;
  stop(): Promise<void>;
}

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  if (r.code !== 0) throw new Error(`main_server.ts ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Starts a hub, the clusters, and one agent per cluster, and waits until every agent is connected. */
export async function startTowerEnv(opts: TowerEnvOptions): Promise<TowerEnv> {
  const dataDir = await scratchDir("env");
  const clusters = new Map<string, TestCluster>();
  const agents = new Map<string, TowerProcess>();
  const added = new Map<string, AddedCluster>();
  let hub: HubProcess | undefined;
  const stop = async () => {
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await hub?.stop();
    await Promise.all([...clusters.values()].map((c) => c.stop()));
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  try {
    const started = await startClusters(opts.clusters, opts.clusterOptions);
    for (const c of started) clusters.set(c.name, c);
    for (const c of started) {
      const mode = opts.modes?.[c.name];
      const r = await serverCommand([
        "cluster",
        "add",
        c.name,
        "--data-dir",
        dataDir,
        ...(mode ? ["--mode", mode] : []),
      ]);
      if (r.code !== 0) throw new Error(r.stderr);
      added.set(c.name, { name: c.name, ...parseIssued(r.stdout), output: r.stdout });
    }
    // The hub listens everywhere; its certificate names every address the agents dial.
    hub = await startHub({
      dataDir,
      ...(opts.port ? { port: opts.port } : {}),
      args: [
        "--listen",
        `0.0.0.0:${opts.port ?? 0}`,
        ...started.flatMap((c) => ["--name", c.hubAddress]),
        ...(opts.hubArgs ?? []),
      ],
    });
    const h = hub;
    const launch = async (cluster: string, name?: string) => {
      const c = clusters.get(cluster)!;
      const a = added.get(cluster)!;
      const creds = await c.agentCredentials();
      const p = startAgent({
        hubUrl: `wss://${c.hubAddress}:${h.port}/tunnel`,
        cluster,
        token: a.token,
        fingerprint: a.fingerprint,
        caFile: a.caFile,
        args: [
          "--kubernetes",
          "--sa-dir",
          creds.saDir,
          ...(opts.agentModes?.[cluster] ? ["--auth-modes", opts.agentModes[cluster]] : []),
          ...(opts.agentArgs ?? []),
        ],
        env: creds.env,
        name: name ?? `agent-${cluster}`,
        wrap: ["ip", "netns", "exec", c.netns],
      });
      await p.waitForMsg("connected to hub");
      return p;
    };
    for (const name of opts.clusters) agents.set(name, await launch(name));
    const kubectlPath = started[0]!.binaries.kubectl;
    const runKubectl: TowerEnv["kubectl"] = (kubeconfig, args, o = {}) =>
      runCommand(kubectlPath, [`--kubeconfig=${kubeconfig}`, ...args], {
        env: o.env,
        stdin: o.stdin,
        timeoutMs: o.timeoutMs ?? 60_000,
      });
    const addUser = async (
      name: string,
      groups: string[],
      clusterGlobs: string[],
      userAddArgs: string[] = [],
    ) => {
      await must([
        "user",
        "add",
        name,
        "--data-dir",
        dataDir,
        ...groups.flatMap((g) => ["--group", g]),
        ...userAddArgs,
      ]);
      if (clusterGlobs.length) {
        await must([
          "access",
          "allow",
          "--user",
          name,
          "--clusters",
          clusterGlobs.join(","),
          "--data-dir",
          dataDir,
        ]);
      }
      const kc = await must([
        "kubeconfig",
        "--user",
        name,
        "--server",
        `https://127.0.0.1:${h.port}`,
        "--data-dir",
        dataDir,
      ]);
      const path = join(dataDir, `kubeconfig-${name}`);
      await Deno.writeTextFile(path, kc, { mode: 0o600 });
      return path;
    };
    return {
      hub,
      dataDir,
      clusters,
      added,
      agents,
      startAgent: launch,
      addUser,
      addTokenUser: async (name, groups, clusterGlobs) => {
        const out = await must([
          "user",
          "add",
          name,
          "--token",
          "--data-dir",
          dataDir,
          ...groups.flatMap((g) => ["--group", g]),
        ]);
        if (clusterGlobs.length) {
          await must([
            "access",
            "allow",
            "--user",
            name,
            "--clusters",
            clusterGlobs.join(","),
            "--data-dir",
            dataDir,
          ]);
        }
        const token = /(tower_[A-Za-z0-9_-]{43})/.exec(out)?.[1];
        if (!token) throw new Error(`no token in: ${out}`);
        return token;
      },
      kubectl: runKubectl,
      spawnKubectl: (kubeconfig, args, env) =>
        new Deno.Command(kubectlPath, {
          args: [`--kubeconfig=${kubeconfig}`, ...args],
          env,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      kubectlPath,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The hub's audit lines so far (it writes them to stdout). */
export function auditLines(env: TowerEnv): Record<string, unknown>[] {
  return auditOf(env.hub);
}

/** A process started by {@link spawnListening}. */
export interface Backend {
  stop(): Promise<void>;
}

/**
 * Runs `code` with `deno eval` inside the cluster's network namespace and waits (up to 30 s) until it
 * prints `listening`. For small real servers behind test Services.
 */
export async function spawnListening(cluster: TestCluster, code: string, label: string): Promise<Backend> {
  const child = cluster.spawnInNetns([Deno.execPath(), "eval", code], {
    cwd: repoRoot,
    env: { NO_COLOR: "1" },
    stdout: "piped",
  });
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.stdout.cancel().catch(() => {});
    await child.status;
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const timer = setTimeout(() => void stop(), 30_000);
  try {
    while (!out.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${label} exited before listening: ${out}`);
      out += value;
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  return { stop };
}
