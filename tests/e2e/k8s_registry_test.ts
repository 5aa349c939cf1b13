/**
 * The registry on Kubernetes, end to end: a real apiserver from the harness (`host`) is the hub's host
 * cluster; a second real cluster (`edge`) is reached only through its agent. Clusters, users and access
 * rules are managed with the CLI (`--registry kubernetes --kubeconfig …`) and with `kubectl apply` of the
 * custom resources; kubectl works through the hub; the hub restarts with everything kept; two registry
 * writers race for LoadBalancer ports; the registry round-trips through export and import; and the API
 * writes caused by agent connects and disconnects are counted from a real watch.
 */

import assert from "node:assert/strict";
import YAML from "yaml";
import { startClusters, type TestCluster } from "../cluster/cluster.ts";
import { exposeHostCluster, type HostAccess } from "../helpers/host_cluster.ts";
import {
  type HubProcess,
  parseIssued,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { eventually } from "../helpers/wait.ts";
import { hashToken, type RegistryData } from "../../lib/registry/mod.ts";
import { hostCluster } from "../../lib/kube/host_cluster.ts";
import { KubernetesRegistry } from "../../lib/registry/k8s_registry.ts";
import { allocateLbPorts, lbKey, type WantedLbPort } from "../../lib/server/lb_allocation.ts";
import { logger } from "../../lib/log/log.ts";

const ns = "tower";

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  if (r.code !== 0) throw new Error(`main_server.ts ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Counts watch events of Cluster objects (a real client watch, independent of the hub's own counters). */
class ClusterWatch {
  readonly events: { type: string; name: string; status: Record<string, unknown> }[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<void>;

  constructor(kubectl: string, kubeconfig: string) {
    const child = new Deno.Command(kubectl, {
      args: [
        `--kubeconfig=${kubeconfig}`,
        "-n",
        ns,
        "get",
        "clusters.tower.dev",
        "--watch",
        "--output-watch-events",
        "-o",
        "json",
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#child = child;
    this.#done = (async () => {
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        // kubectl prints one pretty-printed JSON object per event; split at top-level closing braces.
        let depth = 0, start = -1, inString = false, escaped = false;
        let consumed = 0;
        for (let i = 0; i < buf.length; i++) {
          const ch = buf[i];
          if (inString) {
            if (escaped) escaped = false;
            else if (ch === "\\") escaped = true;
            else if (ch === '"') inString = false;
            continue;
          }
          if (ch === '"') inString = true;
          else if (ch === "{") {
            if (depth++ === 0) start = i;
          } else if (ch === "}" && --depth === 0 && start >= 0) {
            const ev = JSON.parse(buf.slice(start, i + 1));
            this.events.push({
              type: ev.type,
              name: ev.object?.metadata?.name,
              status: ev.object?.status ?? {},
            });
            consumed = i + 1;
          }
        }
        buf = buf.slice(consumed);
      }
    })();
  }

  /** Events of `name` of type MODIFIED seen from index `from` on. */
  modified(name: string, from = 0): number {
    return this.events.slice(from).filter((e) => e.type === "MODIFIED" && e.name === name).length;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#done.catch(() => {});
    await this.#child.status;
  }
}

Deno.test({
  name:
    "registry on Kubernetes: CLI and kubectl apply, agents and kubectl through the hub, restart, LB race, export/import",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const [host, edge] = await startClusters(["k8sreg-host", "k8sreg-edge"]) as [TestCluster, TestCluster];
    let access: HostAccess | undefined;
    let hub: HubProcess | undefined;
    let agent: TowerProcess | undefined;
    let watch: ClusterWatch | undefined;
    const dataDir = await scratchDir("k8sreg");
    try {
      access = await exposeHostCluster(host);
      const a = access;
      assert.equal((await a.kubectl(["create", "namespace", ns])).code, 0);
      const k8s = ["--registry", "kubernetes", "--kubeconfig", a.kubeconfig, "--namespace", ns];
      const kubectlJson = async (args: string[]) => {
        const r = await a.kubectl(["-n", ns, ...args, "-o", "json"]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout);
      };
      watch = new ClusterWatch(host.binaries.kubectl, a.kubeconfig);
      const w = watch;

      let token = "";
      let fingerprint = "";
      await t.step(
        "cluster add writes a Cluster object and a Secret with the token's hash only",
        async () => {
          const out = await must([
            "cluster",
            "add",
            "edge",
            "--data-dir",
            dataDir,
            ...k8s,
            "--label",
            "env=test",
          ]);
          ({ token, fingerprint } = parseIssued(out));
          const obj = await kubectlJson(["get", "clusters.tower.dev", "edge"]);
          assert.deepEqual(obj.spec, { labels: { env: "test" } });
          assert.ok(!JSON.stringify(obj).includes(token.slice(6)), "no token in the Cluster object");
          const secret = await kubectlJson(["get", "secret", "tower-cluster-edge"]);
          assert.equal(atob(secret.data.tokenHash), hashToken(token));
          assert.equal(secret.metadata.ownerReferences[0].name, "edge");
          // The hub's material is in Secrets now, created once.
          for (const s of ["tower-hub-ca", "tower-hub-ssh-host-key"]) {
            assert.equal((await a.kubectl(["-n", ns, "get", "secret", s])).code, 0, s);
          }
          assert.equal(await must(["fingerprint", ...k8s]), fingerprint + "\n");
        },
      );

      const startK8sHub = async () =>
        await startHub({
          dataDir,
          args: ["--listen", "0.0.0.0:0", "--name", edge.hubAddress, "--replica-id", "hub-a", ...k8s],
        });
      const caFile = `${dataDir}/hub-ca.crt`;
      const startEdgeAgent = async (tok: string) => {
        const creds = await edge.agentCredentials();
        const p = startAgent({
          hubUrl: `wss://${edge.hubAddress}:${hub!.port}/tunnel`,
          cluster: "edge",
          token: tok,
          fingerprint,
          caFile,
          args: ["--kubernetes", "--sa-dir", creds.saDir],
          env: creds.env,
          wrap: ["ip", "netns", "exec", edge.netns],
        });
        await p.waitForMsg("connected to hub", 30_000);
        return p;
      };
      const status = async () => (await kubectlJson(["get", "clusters.tower.dev", "edge"])).status ?? {};

      await t.step(
        "the hub serves from the host cluster; an agent connects; Cluster status shows it",
        async () => {
          hub = await startK8sHub();
          const line = hub.lines.find((l) => l.msg === "hub listening")!;
          assert.equal(line.fingerprint, fingerprint);
          assert.equal(line.registry, "kubernetes");
          const ca = await kubectlJson(["get", "secret", "tower-hub-ca"]);
          await Deno.writeTextFile(caFile, atob(ca.data.cert));
          const before = w.events.length;
          agent = await startEdgeAgent(token);
          await eventually(10_000, async () => {
            const s = await status();
            assert.equal(s.connectedAgents, 1);
            assert.equal(s.conditions.find((c: { type: string }) => c.type === "Connected").status, "True");
            assert.equal(s.hubs[0].replica, "hub-a");
          });
          // One agent connecting is one status write.
          await eventually(5_000, () => assert.equal(w.modified("edge", before), 1));
        },
      );

      let kubeconfig = "";
      const viaHub = async (args: string[], kc = kubeconfig) => {
        const child = new Deno.Command(host.binaries.kubectl, {
          args: [`--kubeconfig=${kc}`, ...args],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const out = await child;
        const dec = new TextDecoder();
        return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
      };
      await t.step("users and access rules from the CLI: kubectl works through the hub", async () => {
        await must(["user", "add", "root", "--group", "system:masters", ...k8s]);
        await must(["access", "allow", "--user", "root", "--cluster-selector", "env=test", ...k8s]);
        const kc = await must([
          "kubeconfig",
          "--user",
          "root",
          "--server",
          `https://127.0.0.1:${hub!.port}`,
          ...k8s,
        ]);
        kubeconfig = `${dataDir}/root.kubeconfig`;
        await Deno.writeTextFile(kubeconfig, kc, { mode: 0o600 });
        await eventually(5_000, async () => {
          const r = await viaHub(["get", "namespaces", "-o", "name"]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /namespace\/tower-system/);
        });
        const rules = await kubectlJson(["get", "accessrules.tower.dev"]);
        assert.deepEqual(rules.items.map((i: { spec: unknown }) => i.spec), [
          { users: ["root"], clusterSelector: "env=test" },
        ]);
      });

      await t.step("traffic writes nothing; an agent's disconnect is one status write", async () => {
        const before = w.events.length;
        for (let i = 0; i < 20; i++) {
          const r = await viaHub(["get", "--raw", "/version"]);
          assert.equal(r.code, 0, r.stderr);
        }
        assert.equal(w.modified("edge", before), 0, "requests through the hub write nothing to the API");
        const beforeStop = w.events.length;
        await agent!.stop();
        agent = undefined;
        await eventually(10_000, async () => assert.equal((await status()).connectedAgents, 0));
        await eventually(5_000, () => assert.equal(w.modified("edge", beforeStop), 1));
        // A reconnect is again one write.
        const beforeStart = w.events.length;
        agent = await startEdgeAgent(token);
        await eventually(10_000, async () => assert.equal((await status()).connectedAgents, 1));
        await eventually(5_000, () => assert.equal(w.modified("edge", beforeStart), 1));
      });

      await t.step(
        "kubectl apply of User and AccessRule objects takes effect on the running hub",
        async () => {
          const user = {
            apiVersion: "tower.dev/v1alpha1",
            kind: "User",
            metadata: { name: "bob", namespace: ns },
            spec: { groups: ["system:masters"] },
          };
          const rule = {
            apiVersion: "tower.dev/v1alpha1",
            kind: "AccessRule",
            metadata: { name: "bob-edge", namespace: ns },
            spec: { users: ["bob"], clusters: ["edge"] },
          };
          const r = await a.kubectl(
            ["apply", "-f", "-"],
            JSON.stringify({ apiVersion: "v1", kind: "List", items: [user, rule] }),
          );
          assert.equal(r.code, 0, r.stderr);
          const kc = await must([
            "kubeconfig",
            "--user",
            "bob",
            "--server",
            `https://127.0.0.1:${hub!.port}`,
            ...k8s,
          ]);
          const bobKc = `${dataDir}/bob.kubeconfig`;
          await Deno.writeTextFile(bobKc, kc, { mode: 0o600 });
          await eventually(5_000, async () => {
            const got = await viaHub(["get", "--raw", "/version"], bobKc);
            assert.equal(got.code, 0, got.stderr);
          });
          // Removing the rule with kubectl: the hub refuses bob from the next watch event on.
          const t0 = Date.now();
          assert.equal((await a.kubectl(["-n", ns, "delete", "accessrule", "bob-edge"])).code, 0);
          await eventually(5_000, async () => {
            const got = await viaHub(["get", "--raw", "/version"], bobKc);
            assert.notEqual(got.code, 0);
          });
          // deno-lint-ignore no-console
          console.log(`kubectl delete accessrule -> hub refuses: ${Date.now() - t0} ms (incl. kubectl runs)`);
        },
      );

      await t.step("the CRD schemas refuse invalid objects with a message", async () => {
        const bad = {
          apiVersion: "tower.dev/v1alpha1",
          kind: "Cluster",
          metadata: { name: "bad", namespace: ns },
          spec: { mode: "sideways", port: 70000 },
        };
        const r = await a.kubectl(["apply", "-f", "-"], JSON.stringify(bad));
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /spec\.mode: Unsupported value: "sideways"/);
        assert.match(r.stderr, /spec\.port: Invalid value: 70000/);
        const rule = {
          apiVersion: "tower.dev/v1alpha1",
          kind: "AccessRule",
          metadata: { name: "nobody", namespace: ns },
          spec: { clusters: ["*"] },
        };
        const r2 = await a.kubectl(["apply", "-f", "-"], JSON.stringify(rule));
        assert.notEqual(r2.code, 0);
        assert.match(r2.stderr, /names neither users nor groups/);
      });

      await t.step(
        "a Cluster applied with kubectl gets its token from rotate-token; kubectl delete removes it",
        async () => {
          const obj = {
            apiVersion: "tower.dev/v1alpha1",
            kind: "Cluster",
            metadata: { name: "west", namespace: ns },
            spec: { mode: "passthrough" },
          };
          assert.equal((await a.kubectl(["apply", "-f", "-"], JSON.stringify(obj))).code, 0);
          await eventually(
            5_000,
            async () => assert.match(await must(["cluster", "list", ...k8s]), /^west\s/m),
          );
          const out = await must(["cluster", "rotate-token", "west", ...k8s]);
          const issued = parseIssued(out);
          const secret = await kubectlJson(["get", "secret", "tower-cluster-west"]);
          assert.equal(atob(secret.data.tokenHash), hashToken(issued.token));
          assert.equal((await a.kubectl(["-n", ns, "delete", "cluster.tower.dev", "west"])).code, 0);
          await eventually(
            5_000,
            async () => assert.doesNotMatch(await must(["cluster", "list", ...k8s]), /^west\s/m),
          );
        },
      );

      await t.step("rotate-token closes the agent's session; the new token connects", async () => {
        const out = await must(["cluster", "rotate-token", "edge", ...k8s]);
        const fresh = parseIssued(out).token;
        await hub!.waitFor((l) => l.msg === "cluster token rotated", "token rotated", 10_000);
        await agent!.stop();
        agent = await startEdgeAgent(fresh);
        token = fresh;
        const r = await viaHub(["get", "--raw", "/version"]);
        assert.equal(r.code, 0, r.stderr);
      });

      await t.step("a hub restart keeps clusters, users, rules, fingerprint and CA", async () => {
        const caBefore = await Deno.readTextFile(caFile);
        await agent!.stop();
        agent = undefined;
        await hub!.stop();
        await Deno.remove(`${dataDir}/status.json`).catch(() => {});
        hub = await startK8sHub();
        assert.equal(hub.lines.find((l) => l.msg === "hub listening")!.fingerprint, fingerprint);
        const ca = await kubectlJson(["get", "secret", "tower-hub-ca"]);
        assert.equal(atob(ca.data.cert), caBefore);
        agent = await startEdgeAgent(token);
        const kc = await must([
          "kubeconfig",
          "--user",
          "root",
          "--server",
          `https://127.0.0.1:${hub.port}`,
          ...k8s,
        ]);
        await Deno.writeTextFile(kubeconfig, kc, { mode: 0o600 });
        await eventually(10_000, async () => {
          const r = await viaHub(["get", "namespaces", "-o", "name"]);
          assert.equal(r.code, 0, r.stderr);
        });
      });

      await t.step("two registry writers racing for LoadBalancer ports never share one", async () => {
        const log = logger({ component: "test" });
        const writers = [0, 1].map(() =>
          new KubernetesRegistry(hostCluster({ kubeconfig: a.kubeconfig, namespace: ns }), log)
        );
        await Promise.all(writers.map((r) => r.start()));
        try {
          const wanted = (who: number, i: number) =>
            new Map<string, WantedLbPort>([[
              lbKey({ cluster: `lb-${who}-${i}`, service: "default/web", port: 80, protocol: "TCP" }),
              { service: "default/web", port: 80, protocol: "TCP" },
            ]]);
          // 2 writers × 6 clusters at once, all wanting the lowest free port of a 20-port range.
          await Promise.all(
            writers.flatMap((r, who) =>
              [0, 1, 2, 3, 4, 5].map((i) =>
                r.update((data) => allocateLbPorts(data, `lb-${who}-${i}`, wanted(who, i), [31000, 31019]))
              )
            ),
          );
          const objs = await kubectlJson(["get", "loadbalancerports.tower.dev"]);
          const ports = objs.items.map((o: { spec: { publicPort: number } }) => o.spec.publicPort);
          assert.equal(ports.length, 12);
          assert.equal(new Set(ports).size, 12, `double allocation: ${ports}`);
          const clustersWithPort = new Set(
            objs.items.map((o: { spec: { cluster: string } }) => o.spec.cluster),
          );
          assert.equal(clustersWithPort.size, 12);
          // Both writers' caches agree with the API.
          for (const r of writers) assert.equal((await r.read()).loadBalancers.length, 12);
          // Released again (the next steps compare registries).
          await writers[0]!.update((data) => void (data.loadBalancers = []));
        } finally {
          await Promise.all(writers.map((r) => r.close()));
        }
      });

      await t.step(
        "export -> import into a file registry and into a fresh namespace: nothing lost",
        async () => {
          const exported = await must(["registry", "export", ...k8s]);
          const data = YAML.parse(exported) as RegistryData;
          assert.deepEqual(data.clusters.map((c) => c.name), ["edge"]);
          assert.equal(data.clusters[0]!.tokenHash, hashToken(token));
          assert.ok(data.clusters[0]!.tokenRotatedAt);
          assert.deepEqual(data.users.map((u) => u.name).sort(), ["bob", "root"]);
          const file = `${dataDir}/export.yaml`;
          await Deno.writeTextFile(file, exported);
          const fileDir = await scratchDir("k8sreg-file");
          await must(["registry", "import", file, "--data-dir", fileDir]);
          const fromFile = await must(["registry", "export", "--data-dir", fileDir]);
          assert.deepEqual(YAML.parse(fromFile), data);
          // And back into Kubernetes, in a namespace of its own.
          assert.equal((await a.kubectl(["create", "namespace", "tower-copy"])).code, 0);
          const copy = [
            "--registry",
            "kubernetes",
            "--kubeconfig",
            a.kubeconfig,
            "--namespace",
            "tower-copy",
          ];
          await must(["registry", "import", `${fileDir}/registry.yaml`, ...copy]);
          const again = await must(["registry", "export", ...copy]);
          assert.deepEqual(YAML.parse(again), data);
          // A second import into a registry that is not empty is refused unless --replace.
          const refused = await serverCommand(["registry", "import", file, ...copy]);
          assert.equal(refused.code, 2, refused.stderr);
          assert.match(refused.stderr, /not empty/);
          await Deno.remove(fileDir, { recursive: true });
        },
      );
    } finally {
      await watch?.stop();
      await agent?.stop();
      await hub?.stop();
      await access?.stop();
      await Promise.all([host.stop(), edge.stop()]);
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
