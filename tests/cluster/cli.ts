/**
 * Runs test clusters by hand:
 *
 *   deno run -A tests/cluster/cli.ts up [--clusters cluster-a,cluster-b]
 *   deno run -A tests/cluster/cli.ts reap
 *
 * `up` starts the clusters, prints how to reach each from a shell, and tears everything down on
 * Ctrl-C (SIGINT) or SIGTERM. `reap` removes what killed harness processes left behind.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { reapLeftovers, startClusters, type TestCluster } from "./cluster.ts";

const USAGE = `usage: deno run -A tests/cluster/cli.ts up [--clusters NAME[,NAME…]]   (default: cluster-a)
       deno run -A tests/cluster/cli.ts reap`;

function say(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

function note(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(text + "\n"));
}

/** How to use one cluster from a shell, as printed by `up`. */
export function describeCluster(c: TestCluster): string {
  const kubectl = `ip netns exec ${c.netns} ${c.binaries.kubectl} --kubeconfig ${c.adminKubeconfig}`;
  return [
    `cluster ${c.name} (ready in ${(c.startupMs / 1000).toFixed(1)} s)`,
    `  netns:       ${c.netns}   (root side ${c.vethName} ${c.hubAddress}, inside eth0 ${c.nsAddress})`,
    `  apiserver:   ${c.apiserverUrl} (inside the netns only), CA ${c.caFile}`,
    `  kubectl:     ${kubectl} get nodes`,
    `  shell:       ip netns exec ${c.netns} env KUBECONFIG=${c.adminKubeconfig} PATH=${
      c.binaries.kubectl.replace(/\/kubectl$/, "")
    }:$PATH bash`,
    `  tokens:      ${Object.entries(c.tokens).map(([u, t]) => `${u}=${t}`).join("  ")}`,
    `  node:        ${c.nodeName} (kwok); pod logs from ${c.podLogFile}; port-forward to pod ports ${
      c.forwardPorts.join(",")
    } dials 127.0.0.1:<port> in the netns`,
    `  logs:        ${c.dir}/{etcd,kube-apiserver,kwok}.log`,
  ].join("\n");
}

async function up(names: string[]): Promise<void> {
  const stopRequested = Promise.withResolvers<string>();
  const onSignal = (sig: Deno.Signal) => () => stopRequested.resolve(sig);
  const handlers = (["SIGINT", "SIGTERM"] as const).map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  let clusters: TestCluster[] = [];
  try {
    const starting = startClusters(names, { log: note });
    const first = await Promise.race([starting.then(() => undefined), stopRequested.promise]);
    if (first !== undefined) {
      note(`${first} while starting; cleaning up…`);
      clusters = await starting.catch(() => []);
      return;
    }
    clusters = await starting;
    for (const c of clusters) say(describeCluster(c) + "\n");
    say("clusters ready; Ctrl-C to stop");
    const sig = await stopRequested.promise;
    note(`${sig}: stopping…`);
  } finally {
    const results = await Promise.allSettled(clusters.map((c) => c.stop()));
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    const failed = results.filter((r) => r.status === "rejected");
    for (const f of failed) note(`teardown error: ${(f as PromiseRejectedResult).reason}`);
    if (failed.length === 0) note("stopped; nothing left behind");
  }
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { clusters: { type: "string", default: "cluster-a" }, help: { type: "boolean", short: "h" } },
  });
  const cmd = positionals[0];
  if (values.help || (cmd !== "up" && cmd !== "reap")) {
    note(USAGE);
    Deno.exit(values.help ? 0 : 64);
  }
  try {
    if (cmd === "reap") say(JSON.stringify(await reapLeftovers()));
    else await up(values.clusters.split(",").map((s) => s.trim()).filter((s) => s !== ""));
  } catch (e) {
    note(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
