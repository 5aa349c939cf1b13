/**
 * A test cluster used as a hub's host cluster: its apiserver made reachable from the root network
 * namespace (where hubs run) at https://127.0.0.1:PORT through two TCP relays (one inside the cluster's
 * namespace, one outside), with Tower's CRDs installed, a namespace for the hub, and kubeconfigs.
 * 127.0.0.1 is in the apiserver certificate, so TLS is verified as usual.
 * @module
 */

import { parse as parseYaml, stringify as toYaml } from "yaml";
import { join } from "node:path";
import type { TestCluster } from "../cluster/cluster.ts";
import { runCommand } from "../cluster/command_output.ts";
import { repoRoot, scratchDir } from "./tower_procs.ts";

/** Where Tower's CRDs are (the hub chart's crds/ dir). */
export const crdDir: string = join(repoRoot, "deploy/chart/tower-hub/crds");

/** A host cluster reachable from the root namespace. */
export interface HostAccess {
  /** The relay port on 127.0.0.1 in the root namespace. */
  port: number;
  /** Admin kubeconfig (system:masters) for root-namespace clients, under /tmp/tower. */
  kubeconfig: string;
  /** Scratch dir of this host (under /tmp/tower, readable by the hub's permission set). */
  dir: string;
  /** kubectl from the root namespace as admin. */
  kubectl(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

async function relay(
  spawn: (cmd: string[]) => Deno.ChildProcess,
): Promise<{ port: number; child: Deno.ChildProcess }> {
  const child = spawn([Deno.execPath(), "run", "-A", join(repoRoot, "tests/helpers/tcp_relay.ts")]);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 30_000);
  try {
    while (!/listening (\d+)/.test(out)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`relay exited before listening: ${out}`);
      out += value;
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  void child.stdout.cancel().catch(() => {});
  return { port: Number(/listening (\d+)/.exec(out)![1]), child };
}

/** Makes `cluster`'s apiserver reachable from the root namespace and installs Tower's CRDs. */
export async function exposeHostCluster(cluster: TestCluster): Promise<HostAccess> {
  const inner = await relay((cmd) =>
    cluster.spawnInNetns([...cmd, cluster.nsAddress, "0", "127.0.0.1", "6443"], {
      stdout: "piped",
      stderr: "inherit",
    })
  );
  const outer = await relay((cmd) =>
    new Deno.Command(cmd[0]!, {
      args: [...cmd.slice(1), "127.0.0.1", "0", cluster.nsAddress, String(inner.port)],
      stdout: "piped",
      stderr: "inherit",
    }).spawn()
  );
  const dir = await scratchDir("host");
  const kc = parseYaml(await Deno.readTextFile(cluster.adminKubeconfig));
  kc.clusters[0].cluster.server = `https://127.0.0.1:${outer.port}`;
  const kubeconfig = `${dir}/admin.kubeconfig`;
  await Deno.writeTextFile(kubeconfig, toYaml(kc), { mode: 0o600 });
  const kubectl = (args: string[], stdin?: string) =>
    runCommand(cluster.binaries.kubectl, [`--kubeconfig=${kubeconfig}`, ...args], { stdin });
  const r = await kubectl(["apply", "-f", crdDir]);
  if (r.code !== 0) throw new Error(`CRDs not accepted: ${r.stderr}`);
  const crds = ["clusters", "users", "accessrules", "loadbalancerports"].map((p) => `crd/${p}.tower.dev`);
  const established = await kubectl(["wait", "--for=condition=Established", ...crds, "--timeout=30s"]);
  if (established.code !== 0) throw new Error(`CRDs not established: ${established.stderr}`);
  return {
    port: outer.port,
    kubeconfig,
    dir,
    kubectl,
    stop: async () => {
      for (const c of [outer.child, inner.child]) {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
        await c.status;
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
