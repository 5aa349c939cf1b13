/**
 * `deno task dev`: a local Tower to play with. Starts a hub, two real clusters in their own network
 * namespaces (the hub cannot reach them directly), and an in-cluster agent for each; writes a kubeconfig
 * with one context per cluster, through the hub; waits for Ctrl-C and tears everything down.
 *
 *   deno task dev                 # hub + cluster-a + cluster-b (needs root, Go once for the binaries)
 *   deno task dev --clusters x,y  # other cluster names
 *   deno task dev --kind          # kind clusters instead (needs kind and Docker; not exercised in CI)
 * @module
 */
// deno-lint-ignore-file no-console

import { parseArgs } from "node:util";
import { join } from "node:path";
import { startTowerEnv } from "../e2e/tower_env.ts";
import { repoRoot, serverCommand, startHub } from "../helpers/tower_procs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clusters: { type: "string", default: "cluster-a,cluster-b" },
    kind: { type: "boolean", default: false },
    port: { type: "string", default: "8443" },
  },
});
const names = String(values.clusters).split(",").map((s) => s.trim()).filter(Boolean);
const port = Number(values.port);
const kubeconfigPath = join(repoRoot, ".tower", "dev.kubeconfig");
await Deno.mkdir(join(repoRoot, ".tower"), { recursive: true });

function waitForCtrlC(): Promise<void> {
  return new Promise((resolve) => {
    Deno.addSignalListener("SIGINT", () => resolve());
    Deno.addSignalListener("SIGTERM", () => resolve());
  });
}

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "inherit",
  })
    .spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

/** The agent image `--kind` builds from deploy/agent/Dockerfile and loads into each kind cluster. */
const kindAgentImage = "tower-agent:dev";

/**
 * kind flavour: kind clusters in Docker, the agent image built from this checkout, and the agent deployed
 * with the very manifest `cluster add` prints (deploy/agent/) with that image. The hub is reached from the
 * kind nodes at the gateway of kind's Docker network.
 */
async function devWithKind(): Promise<void> {
  for (const tool of ["kind", "docker", "kubectl"]) {
    if (!(await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output()).success) {
      throw new Error(`--kind needs '${tool}' on PATH`);
    }
  }
  const dataDir = join(repoRoot, ".tower", "dev-kind");
  let hub: Awaited<ReturnType<typeof startHub>> | undefined;
  try {
    await run("docker", ["build", "-f", "deploy/agent/Dockerfile", "-t", kindAgentImage, repoRoot]);
    for (const name of names) {
      await run("kind", ["create", "cluster", "--name", `tower-${name}`]);
      await run("kind", ["load", "docker-image", kindAgentImage, "--name", `tower-${name}`]);
    }
    // kind puts its nodes on a Docker network of its own (named "kind"); its gateway is this machine.
    const gateway = (await run("docker", [
      "network",
      "inspect",
      "kind",
      "-f",
      "{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}",
    ])).trim().split(/\s+/).find((g) => /^\d+\.\d+\.\d+\.\d+$/.test(g));
    if (!gateway) throw new Error("cannot find the IPv4 gateway of Docker network 'kind'");
    hub = await startHub({ dataDir, port, args: ["--listen", `0.0.0.0:${port}`, "--name", gateway] });
    await serverCommand(["user", "add", "dev", "--group", "system:masters", "--data-dir", dataDir]);
    await serverCommand(["access", "allow", "--user", "dev", "--clusters", "*", "--data-dir", dataDir]);
    for (const name of names) {
      const added = await serverCommand([
        "cluster",
        "add",
        name,
        "--hub-url",
        `wss://${gateway}:${port}/tunnel`,
        "--data-dir",
        dataDir,
      ]);
      const manifest = added.stdout.slice(added.stdout.indexOf("---\n") + 4)
        .replace(/image: \S+/, `image: ${kindAgentImage}\n          imagePullPolicy: Never`);
      await run("kubectl", ["--context", `kind-tower-${name}`, "apply", "-f", "-"], manifest);
    }
    const kc = await serverCommand([
      "kubeconfig",
      "--user",
      "dev",
      "--server",
      `https://127.0.0.1:${port}`,
      "--data-dir",
      dataDir,
    ]);
    await Deno.writeTextFile(kubeconfigPath, kc.stdout, { mode: 0o600 });
    console.log(`kind clusters up; try: kubectl --kubeconfig ${kubeconfigPath} --context ${names[0]} get ns`);
    await waitForCtrlC();
  } finally {
    await hub?.stop();
    for (const name of names) {
      await run("kind", ["delete", "cluster", "--name", `tower-${name}`]).catch(() => {});
    }
  }
}

async function devWithHarness(): Promise<void> {
  console.log(`starting a hub and ${names.length} clusters (${names.join(", ")})…`);
  const started = performance.now();
  const env = await startTowerEnv({ clusters: names, port });
  try {
    const kc = await env.addUser("dev", ["system:masters"], ["*"]);
    await Deno.copyFile(kc, kubeconfigPath);
    const a = env.clusters.get(names[0]!)!;
    console.log(`
Tower is up in ${Math.round((performance.now() - started) / 1000)} s: hub on https://127.0.0.1:${env.hub.port}
(data dir ${env.dataDir}), ${names.length} clusters, each in its own network namespace with an agent.

  kubectl --kubeconfig ${kubeconfigPath} --context ${names[0]} get ns
  kubectl --kubeconfig ${kubeconfigPath} --context ${names[1] ?? names[0]} get nodes

kubectl: ${env.kubectlPath}
Straight to ${names[0]}'s apiserver (inside its namespace only):
  ip netns exec ${a.netns} ${env.kubectlPath} --kubeconfig ${a.adminKubeconfig} get ns
Audit lines appear below. Ctrl-C stops everything.
`);
    env.hub.stdout.length = 0;
    const tick = setInterval(() => {
      for (const line of env.hub.stdout.splice(0)) console.log(line);
    }, 500);
    await waitForCtrlC();
    clearInterval(tick);
  } finally {
    console.log("stopping…");
    await env.stop();
    await Deno.remove(kubeconfigPath).catch(() => {});
  }
}

try {
  await (values.kind ? devWithKind() : devWithHarness());
  Deno.exit(0);
} catch (e) {
  console.error(`dev: ${(e as Error).message}`);
  Deno.exit(1);
}
