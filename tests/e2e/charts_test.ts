/**
 * The Helm charts (deploy/chart/tower-hub, deploy/chart/tower-agent): `helm lint`; `helm template`
 * accepted by a real apiserver (`kubectl apply --dry-run=server`: CRDs, RBAC, workloads); and the hub run
 * exactly as the chart's pod would run it: the rendered container args, the chart's ServiceAccount with
 * a token minted by the TokenRequest API and only the chart's RBAC, the in-cluster environment
 * (KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount files). That hub then does real work: a cluster
 * added through the API, its agent (in the same cluster, as a management cluster's own agent would be)
 * connects, and kubectl works through the hub.
 */

import assert from "node:assert/strict";
import YAML from "yaml";
import { findGoTool } from "../cluster/bins.ts";
import { startCluster } from "../cluster/cluster.ts";
import { runCommand } from "../cluster/command_output.ts";
import { exposeHostCluster, type HostAccess } from "../helpers/host_cluster.ts";
import {
  type HubProcess,
  parseIssued,
  repoRoot,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { eventually } from "../helpers/wait.ts";

const hubChart = `${repoRoot}deploy/chart/tower-hub`;
const agentChart = `${repoRoot}deploy/chart/tower-agent`;
const ns = "tower-hub";

const run = (cmd: string, args: string[], stdin?: string) => runCommand(cmd, args, { stdin });

const agentValues = [
  "--set",
  "cluster=edge",
  "--set",
  "hubUrl=wss://tower.example.com:8443/tunnel",
  "--set",
  "hubFingerprint=SHA256:abc",
  "--set",
  "token=tower_x",
  "--set",
  "hubCa=-----BEGIN CERTIFICATE-----",
];

Deno.test({
  name: "charts: helm lint, server-side dry run, and the hub run as the chart's pod doing real work",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const helm = await findGoTool("helm");
    await t.step("helm lint", async () => {
      const hub = await run(helm, ["lint", "--strict", hubChart]);
      assert.equal(hub.code, 0, hub.stdout + hub.stderr);
      const agent = await run(helm, ["lint", "--strict", agentChart, ...agentValues]);
      assert.equal(agent.code, 0, agent.stdout + agent.stderr);
      // The agent chart refuses to render without what `cluster add` prints.
      const bare = await run(helm, ["template", "a", agentChart]);
      assert.notEqual(bare.code, 0);
      assert.match(bare.stderr, /set cluster/);
    });

    const host = await startCluster("charts-host");
    let access: HostAccess | undefined;
    let hub: HubProcess | undefined;
    let agent: TowerProcess | undefined;
    const dataDir = await scratchDir("charts");
    try {
      access = await exposeHostCluster(host);
      const a = access;
      assert.equal((await a.kubectl(["create", "namespace", ns])).code, 0);

      let rendered: Record<string, unknown>[] = [];
      await t.step(
        "helm template | kubectl apply --dry-run=server: a real apiserver accepts every object",
        async () => {
          const tpl = await run(helm, [
            "template",
            "tower",
            hubChart,
            "-n",
            ns,
            "--include-crds",
            "--set",
            "loadBalancerPorts.enabled=true",
            "--set",
            "publicUrl=wss://tower.example.com:8443/tunnel",
          ]);
          assert.equal(tpl.code, 0, tpl.stderr);
          rendered = YAML.parseAllDocuments(tpl.stdout).map((d) => d.toJSON()).filter(Boolean);
          const kinds = rendered.map((o) => o.kind).sort();
          for (
            const k of [
              "ConfigMap",
              "CustomResourceDefinition",
              "Deployment",
              "PodDisruptionBudget",
              "Role",
              "RoleBinding",
              "Service",
              "ServiceAccount",
            ]
          ) assert.ok(kinds.includes(k), `${k} rendered`);
          assert.ok(!kinds.includes("ClusterRole"), "the hub needs no cluster-wide rights");
          const dry = await a.kubectl(["apply", "--dry-run=server", "-f", "-"], tpl.stdout);
          assert.equal(dry.code, 0, dry.stderr);
          const agentTpl = await run(helm, [
            "template",
            "tower-agent",
            agentChart,
            "-n",
            "tower-system",
            ...agentValues,
          ]);
          assert.equal(agentTpl.code, 0, agentTpl.stderr);
          assert.equal((await a.kubectl(["create", "namespace", "tower-system"])).code, 0);
          const dryAgent = await a.kubectl(["apply", "--dry-run=server", "-f", "-"], agentTpl.stdout);
          assert.equal(dryAgent.code, 0, dryAgent.stderr);
          // The chart grants the agent exactly the rules of deploy/agent/rbac.yaml (what cluster add prints).
          const fileRole = YAML.parseAllDocuments(
            await Deno.readTextFile(`${repoRoot}deploy/agent/rbac.yaml`),
          )
            .map((d) => d.toJSON()).find((o) => o.kind === "ClusterRole");
          const chartRole = YAML.parseAllDocuments(agentTpl.stdout).map((d) => d.toJSON())
            .find((o) => o?.kind === "ClusterRole");
          assert.deepEqual(chartRole.rules, fileRole.rules);
        },
      );

      await t.step("the hub as the chart's pod: chart RBAC only, in-cluster config, real work", async () => {
        // The chart's objects for real (the Deployment gets no pods: the harness runs no controllers).
        const tpl = await run(helm, ["template", "tower", hubChart, "-n", ns, "--include-crds"]);
        assert.equal(tpl.code, 0, tpl.stderr);
        const applied = await a.kubectl(["apply", "-f", "-"], tpl.stdout);
        assert.equal(applied.code, 0, applied.stderr);
        const docs = YAML.parseAllDocuments(tpl.stdout).map((d) => d.toJSON()).filter(Boolean);
        const deployment = docs.find((o) => o.kind === "Deployment");
        const pod = deployment.spec.template.spec;
        const container = pod.containers[0];
        // Its ServiceAccount's token, minted with the TokenRequest API, in a stand-in for the pod's
        // /var/run/secrets/kubernetes.io/serviceaccount.
        const token = await a.kubectl([
          "-n",
          ns,
          "create",
          "token",
          pod.serviceAccountName,
          "--duration=3600s",
        ]);
        assert.equal(token.code, 0, token.stderr);
        const saDir = `${dataDir}/serviceaccount`;
        await Deno.mkdir(saDir, { recursive: true });
        await Deno.writeTextFile(`${saDir}/token`, token.stdout.trim(), { mode: 0o600 });
        await Deno.copyFile(host.caFile, `${saDir}/ca.crt`);
        await Deno.writeTextFile(`${saDir}/namespace`, ns);
        // What the SA may do is the chart's Role and nothing else.
        const can = async (verb: string, what: string, where = ns, extra: string[] = []) =>
          (await a.kubectl([
            "auth",
            "can-i",
            verb,
            what,
            ...extra,
            "-n",
            where,
            `--as=system:serviceaccount:${ns}:${pod.serviceAccountName}`,
          ])).stdout.trim();
        assert.equal(await can("watch", "clusters.tower.dev"), "yes");
        assert.equal(await can("update", "clusters.tower.dev", ns, ["--subresource=status"]), "yes");
        assert.equal(await can("update", "leases.coordination.k8s.io"), "yes");
        assert.equal(await can("get", "secrets", "default"), "no");
        assert.equal(await can("list", "pods"), "no");
        assert.equal(await can("list", "namespaces"), "no");

        const env: Record<string, string> = {
          KUBERNETES_SERVICE_HOST: "127.0.0.1",
          KUBERNETES_SERVICE_PORT: String(a.port),
          TOWER_SA_DIR: saDir,
          TOWER_REPLICA: "tower-hub-0", // the pod name (fieldRef metadata.name)
        };
        // The container's args as rendered, with $(VAR) expanded from its env as the kubelet does; only the
        // listen port differs (tests share the machine).
        const podEnv: Record<string, string> = { TOWER_REPLICA: env.TOWER_REPLICA! };
        for (const e of container.env) if (e.value !== undefined) podEnv[e.name] = e.value;
        const args = (container.args as string[]).slice(1).map((arg) =>
          arg.replace(/\$\((\w+)\)/g, (_, name: string) => podEnv[name] ?? `$(${name})`)
        );
        assert.ok(args.includes("tower-hub-0"), `replica id from the pod name: ${args}`);
        hub = await startHub({
          dataDir,
          args: [...args, "--listen", "0.0.0.0:0", "--name", host.hubAddress],
          env,
        });
        assert.equal(hub.lines.find((l) => l.msg === "hub listening")!.registry, "kubernetes");

        // An operator adds the cluster through the API (their own kubeconfig), as NOTES.txt says.
        const k8s = ["--registry", "kubernetes", "--kubeconfig", a.kubeconfig, "--namespace", ns];
        const out = await serverCommand(["cluster", "add", "home", ...k8s]);
        assert.equal(out.code, 0, out.stderr);
        const issued = parseIssued(out.stdout);
        assert.equal(issued.fingerprint, hub.lines.find((l) => l.msg === "hub listening")!.fingerprint);
        const ca = JSON.parse(
          (await a.kubectl(["-n", ns, "get", "secret", "tower-hub-ca", "-o", "json"])).stdout,
        );
        const caFile = `${dataDir}/hub-ca.crt`;
        await Deno.writeTextFile(caFile, atob(ca.data.cert));
        const creds = await host.agentCredentials();
        const h = hub;
        agent = startAgent({
          hubUrl: `wss://${host.hubAddress}:${h.port}/tunnel`,
          cluster: "home",
          token: issued.token,
          fingerprint: issued.fingerprint,
          caFile,
          args: ["--kubernetes", "--sa-dir", creds.saDir],
          env: creds.env,
          wrap: ["ip", "netns", "exec", host.netns],
        });
        await agent.waitForMsg("connected to hub", 30_000);
        for (
          const args of [
            ["user", "add", "ops", "--group", "system:masters"],
            ["access", "allow", "--user", "ops", "--clusters", "*"],
          ]
        ) {
          const r = await serverCommand([...args, ...k8s]);
          assert.equal(r.code, 0, r.stderr);
        }
        const kc = await serverCommand([
          "kubeconfig",
          "--user",
          "ops",
          "--server",
          `https://127.0.0.1:${h.port}`,
          ...k8s,
        ]);
        assert.equal(kc.code, 0, kc.stderr);
        const kubeconfig = `${dataDir}/ops.kubeconfig`;
        await Deno.writeTextFile(kubeconfig, kc.stdout, { mode: 0o600 });
        await eventually(10_000, async () => {
          const r = await run(host.binaries.kubectl, [
            `--kubeconfig=${kubeconfig}`,
            "get",
            "crd",
            "-o",
            "name",
          ]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /clusters\.tower\.dev/);
        });
        // The hub wrote the Cluster's status with its own (chart) identity.
        await eventually(10_000, async () => {
          const c = JSON.parse(
            (await a.kubectl(["-n", ns, "get", "clusters.tower.dev", "home", "-o", "json"])).stdout,
          );
          assert.equal(c.status?.connectedAgents, 1);
          assert.equal(c.status?.hubs?.[0]?.replica, "tower-hub-0");
        });
        // Its replica Lease, held with the chart's rights.
        const lease = await a.kubectl(["-n", ns, "get", "leases.coordination.k8s.io", "-o", "name"]);
        assert.match(lease.stdout, /tower-hub-0/, lease.stderr);
      });
    } finally {
      await agent?.stop();
      await hub?.stop();
      await access?.stop();
      await host.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
