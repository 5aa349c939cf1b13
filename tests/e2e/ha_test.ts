/**
 * Hub HA end to end: three hub replicas on the host-cluster registry (a harness apiserver holds their
 * Leases, CRDs and Secrets) behind HAProxy, which agents and users both go through; peer links between
 * the replicas; two real clusters with two agents each. Checked: a request landing on any replica reaches
 * every cluster (the audit line of the replica that answered names the agent, or the replica it went
 * through); exec, port-forward, a watch and LoadBalancer TCP/UDP across a peer hop; kill -9 of a replica
 * under 20 requests a second; a rolling restart with drain under the same load; a user certificate on the
 * peer link.
 *
 * The agents of `ha-a` hold 2 tunnels each (the default); those of `ha-b` hold 1, so at most two replicas
 * hold an `ha-b` session and at least one replica must carry `ha-b` requests through a peer.
 *
 * The steady load makes each request on a new TLS connection with the user's client certificate, as a
 * fresh `kubectl get` process does; spawning 20 kubectl processes a second would take both cores of a CI
 * machine by itself. kubectl itself drives exec, port-forward and the watch.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import YAML from "yaml";
import { startClusters, type TestCluster } from "../cluster/cluster.ts";
import { runCommand } from "../cluster/command_output.ts";
import { exposeHostCluster, type HostAccess } from "../helpers/host_cluster.ts";
import {
  auditOf,
  type HubProcess,
  type LogLine,
  parseIssued,
  replicaOf,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { type Haproxy, startHaproxy } from "../helpers/haproxy.ts";
import { eventually, within } from "../helpers/wait.ts";
import { parseSamples, sampleSum } from "../helpers/metrics_text.ts";
import { type Backend, spawnListening } from "./tower_env.ts";
import { randomBytes, running, sha256Hex } from "./_kubectl_helpers.ts";

const clusterNames = ["ha-a", "ha-b"] as const;
type ClusterName = typeof clusterNames[number];
/** Tunnels each agent of a cluster holds. */
const tunnelsOf: Record<ClusterName, number> = { "ha-a": 2, "ha-b": 1 };
/** The host cluster's namespace for Tower's objects. */
const ns = "tower";
/** Public LoadBalancer ports (replica i listens on 127.0.0.(11+i)). */
const lbRange = [31891, 31894] as const;
const MiB = 1 << 20;

/** One hub replica process and what the test reads from it. */
interface Replica {
  hub: HubProcess;
  id: string;
  /** `HOST:PORT` of its credential-free /metrics. */
  metrics: string;
  /** `HOST:PORT` of its peer link. */
  peer: string;
  /** Where its LoadBalancer ports listen. */
  lbHost: string;
}

interface Agent {
  proc: TowerProcess;
  cluster: ClusterName;
}

interface HaEnv {
  dataDir: string;
  host: TestCluster;
  access: HostAccess;
  clusters: Record<ClusterName, TestCluster>;
  /** The current replica in each slot (0..2); every process ever started is in `every`. */
  replicas: Replica[];
  every: Replica[];
  ports: number[];
  lb: Haproxy;
  agents: Agent[];
  /** The hub CA (PEM) and a system:masters user's client certificate. */
  tls: { ca: string; cert: string; key: string };
  /** A kubeconfig for the user whose server is `https://127.0.0.1:PORT`. */
  kubeconfig(port: number): Promise<string>;
  k8s: string[];
  startReplica(slot: number): Promise<Replica>;
  stop(): Promise<void>;
}

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  if (r.code !== 0) throw new Error(`main_server.ts ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Agent sessions of `cluster` a replica holds now, from its log. */
function sessionsOn(r: Replica, cluster: string): number {
  let n = 0;
  for (const l of r.hub.lines) {
    if (l.cluster !== cluster) continue;
    if (l.msg === "agent connected") n++;
    else if (l.msg === "agent disconnected") n--;
  }
  return n;
}

/** Replicas an agent holds a tunnel to now, from its log. */
function tunnelsHeld(a: TowerProcess): string[] {
  const held: string[] = [];
  for (const l of a.lines) {
    if (l.msg === "connected to hub") held.push(String(l.replica));
    else if (l.msg === "disconnected from hub") {
      const i = held.indexOf(String(l.replica));
      if (i >= 0) held.splice(i, 1);
    }
  }
  return held;
}

/** Waits until every agent holds its cluster's number of tunnels, to distinct live replicas. */
async function agentsSettled(env: HaEnv, timeoutMs: number): Promise<void> {
  const live = () => new Set(env.replicas.map((r) => r.id));
  await eventually(timeoutMs, () => {
    for (const a of env.agents) {
      const held = tunnelsHeld(a.proc);
      assert.equal(new Set(held).size, held.length, `${a.proc.name} holds two tunnels to one replica`);
      assert.equal(held.length, tunnelsOf[a.cluster], `${a.proc.name} holds ${held}`);
      for (const r of held) assert.ok(live().has(r), `${a.proc.name} holds a tunnel to gone ${r}`);
    }
  });
}

/** Metric samples of a replica. */
async function metricsOf(r: Replica) {
  return parseSamples(await (await fetch(`http://${r.metrics}/metrics`)).text());
}

async function startHa(): Promise<HaEnv> {
  const dataDir = await scratchDir("ha");
  const [host, a, b] = await startClusters(["ha-host", ...clusterNames]) as [
    TestCluster,
    TestCluster,
    TestCluster,
  ];
  const clusters = { "ha-a": a, "ha-b": b };
  const every: Replica[] = [];
  const replicas: Replica[] = [];
  const agents: Agent[] = [];
  let lb: Haproxy | undefined;
  let access: HostAccess | undefined;
  const stop = async () => {
    await Promise.all(agents.map((x) => x.proc.stop()));
    await lb?.stop();
    await Promise.all(every.map((r) => r.hub.stop("SIGKILL")));
    await access?.stop();
    await Promise.all([host, a, b].map((c) => c.stop()));
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  try {
    access = await exposeHostCluster(host);
    assert.equal((await access.kubectl(["create", "namespace", ns])).code, 0);
    const k8s = ["--registry", "kubernetes", "--kubeconfig", access.kubeconfig, "--namespace", ns];
    const added = new Map<string, ReturnType<typeof parseIssued>>();
    for (const c of clusterNames) {
      added.set(c, parseIssued(await must(["cluster", "add", c, "--data-dir", dataDir, ...k8s])));
    }
    await must(["user", "add", "ops", "--group", "system:masters", ...k8s]);
    await must(["access", "allow", "--user", "ops", "--clusters", "*", ...k8s]);
    const ports: number[] = [];
    const startReplica = async (slot: number) => {
      const lbHost = `127.0.0.${11 + slot}`;
      const hub = await startHub({
        dataDir,
        ...(ports[slot] ? { port: ports[slot] } : {}),
        // Three replicas starting on a loaded 2-core machine, each loading the Kubernetes client.
        startTimeoutMs: 90_000,
        args: [
          ...k8s,
          "--peer-listen",
          "127.0.0.1:0",
          "--drain-timeout",
          "15s",
          "--metrics-listen",
          "127.0.0.1:0",
          "--lb-ports",
          `${lbRange[0]}-${lbRange[1]}`,
          "--lb-address",
          "127.0.0.1",
          "--lb-bind",
          lbHost,
          ...clusterNames.flatMap((c) => ["--name", clusters[c].hubAddress]),
        ],
      });
      const r: Replica = {
        hub,
        id: replicaOf(hub),
        metrics: String((await hub.waitForMsg("metrics listening")).listen),
        peer: String((await hub.waitForMsg("peer link listening")).listen),
        lbHost,
      };
      ports[slot] = hub.port;
      replicas[slot] = r;
      every.push(r);
      return r;
    };
    // All three at once: they race to create the peer CA and the serving certificate in Secrets.
    await Promise.all([0, 1, 2].map(startReplica));
    await Promise.all(
      replicas.map((r) =>
        r.hub.waitFor(
          (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 3,
          "3 replicas",
          60_000,
        )
      ),
    );
    const secret = async (name: string) => {
      const r = await access!.kubectl(["-n", ns, "get", "secret", name, "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).data as Record<string, string>;
    };
    const ca = atob((await secret("tower-hub-ca")).cert!);
    const caFile = `${dataDir}/hub-ca.crt`;
    await Deno.writeTextFile(caFile, ca);
    lb = await startHaproxy({ backends: ports, tls: true, bind: "0.0.0.0" });
    for (const c of clusterNames) {
      const issued = added.get(c)!;
      for (let n = 0; n < 2; n++) {
        const creds = await clusters[c].agentCredentials();
        agents.push({
          cluster: c,
          proc: startAgent({
            hubUrl: `wss://${clusters[c].hubAddress}:${lb.port}/tunnel`,
            cluster: c,
            token: issued.token,
            fingerprint: issued.fingerprint,
            caFile,
            args: [
              "--kubernetes",
              "--sa-dir",
              creds.saDir,
              "--hub-connections",
              String(tunnelsOf[c]),
              "--backoff-max",
              "3s",
            ],
            env: creds.env,
            name: `agent-${c}-${n}`,
            wrap: ["ip", "netns", "exec", clusters[c].netns],
          }),
        });
      }
    }
    const kcText = await must(["kubeconfig", "--user", "ops", "--server", "https://127.0.0.1:1", ...k8s]);
    const kc = YAML.parse(kcText) as { users: { user: Record<string, string> }[] };
    const env: HaEnv = {
      dataDir,
      host,
      access,
      clusters,
      replicas,
      every,
      ports,
      lb,
      agents,
      tls: {
        ca,
        cert: atob(kc.users[0]!.user["client-certificate-data"]!),
        key: atob(kc.users[0]!.user["client-key-data"]!),
      },
      kubeconfig: async (port) => {
        const file = `${dataDir}/ops-${port}.kubeconfig`;
        await Deno.writeTextFile(
          file,
          kcText.replaceAll("https://127.0.0.1:1/", `https://127.0.0.1:${port}/`),
          {
            mode: 0o600,
          },
        );
        return file;
      },
      k8s,
      startReplica,
      stop,
    };
    await agentsSettled(env, 90_000);
    return env;
  } catch (e) {
    await stop();
    throw e;
  }
}

/** One GET on a new connection (as a fresh kubectl process makes): its status (0: no answer) and why not. */
function getOnce(
  port: number,
  path: string,
  auth: HaEnv["tls"],
  timeoutMs = 10_000,
): Promise<{ status: number; error?: string; tookMs: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const done = (status: number, error?: string) =>
      resolve({ status, ...(error ? { error } : {}), tookMs: Math.round(performance.now() - t0) });
    const req = https.get(
      { host: "127.0.0.1", port, path, ...auth, agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on("end", () => done(res.complete ? res.statusCode ?? 0 : 0, res.complete ? undefined : "cut"));
        res.on("error", (e) => done(0, e.message));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => done(0, e.message));
  });
}

/** One result of the steady load: when the request started (ms since the load began) and its status. */
interface LoadResult {
  at: number;
  status: number;
  cluster: string;
  error?: string;
  tookMs: number;
}

/**
 * Steady load: `perSecond` GETs a second through the load balancer, alternating between the clusters,
 * each on a new connection, until `stop()` or `maxMs`.
 */
function steadyLoad(env: HaEnv, perSecond: number, maxMs: number) {
  const results: LoadResult[] = [];
  let stopped = false;
  const started = performance.now();
  const running: Promise<void>[] = [];
  const loop = (async () => {
    for (let i = 0; !stopped && performance.now() - started < maxMs; i++) {
      const cluster = clusterNames[i % clusterNames.length]!;
      const at = performance.now() - started;
      running.push(
        getOnce(env.lb.port, `/clusters/${cluster}/api/v1/namespaces/default`, env.tls).then((r) => {
          results.push({ at, cluster, ...r });
        }),
      );
      const next = started + ((i + 1) * 1000) / perSecond;
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
  })();
  return {
    results,
    /** Milliseconds since the load began. */
    elapsed: () => performance.now() - started,
    stop: async () => {
      stopped = true;
      await loop;
      await Promise.all(running);
      return results;
    },
  };
}

/**
 * A watch of ConfigMaps in `default` through the load balancer, resumed from the last resourceVersion
 * whenever it ends, as a client-go reflector does. Counts clean ends (the end of the chunked stream), cut
 * ones (the connection ended mid-stream after the watch was answered) and broken ones (refused, an error
 * status or an error event).
 */
class ResumingWatch {
  clean = 0;
  cut = 0;
  broken: string[] = [];
  readonly names = new Set<string>();
  #rv = "";
  #stopped = false;
  #req: ReturnType<typeof https.get> | undefined;
  readonly #done: Promise<void>;

  constructor(readonly env: HaEnv, readonly cluster: string, rv: string) {
    this.#rv = rv;
    this.#done = (async () => {
      // Bounded: at most 100 watches (a restart ends each at most once; failures retry after 200 ms).
      for (let i = 0; i < 100 && !this.#stopped; i++) {
        const outcome = await this.#watchOnce();
        if (this.#stopped) break;
        if (outcome === "end") this.clean++;
        else if (outcome === "cut") this.cut++;
        else {
          this.broken.push(outcome);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    })();
  }

  #watchOnce(): Promise<string> {
    const path = `/clusters/${this.cluster}/api/v1/namespaces/default/configmaps?watch=1` +
      `&allowWatchBookmarks=true&resourceVersion=${this.#rv}`;
    return new Promise((resolve) => {
      let buf = "";
      let answered = false;
      const req = https.get({
        host: "127.0.0.1",
        port: this.env.lb.port,
        path,
        ...this.env.tls,
        agent: false,
      }, (res) => {
        answered = true;
        if (res.statusCode !== 200) {
          res.resume();
          return resolve(`status ${res.statusCode}`);
        }
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          buf += c;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            const ev = JSON.parse(line) as {
              type: string;
              object: { metadata?: { name?: string; resourceVersion?: string } };
            };
            if (ev.type === "ERROR") {
              resolve(`error event: ${line.slice(0, 200)}`);
              return req.destroy();
            }
            if (ev.object.metadata?.resourceVersion) this.#rv = ev.object.metadata.resourceVersion;
            if (ev.type === "ADDED" && ev.object.metadata?.name) this.names.add(ev.object.metadata.name);
          }
        });
        res.on("end", () => resolve(res.complete && buf === "" ? "end" : "cut"));
        // Answered, then the connection ended mid-stream: a cut (its upstream was lost).
        res.on("error", () => resolve("cut"));
      });
      this.#req = req;
      req.on("error", (e) => resolve(answered ? "cut" : `error: ${e.message}`));
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#req?.destroy();
    await this.#done;
  }
}

/**
 * Sends `data` to an echo at `host:port` and reads back as many bytes (port-forward carries no half-close,
 * so the end of the echo is its length); the connection is closed afterwards.
 */
async function echoRoundTrip(host: string, port: number, data: Uint8Array): Promise<Uint8Array> {
  const s = net.connect({ host, port });
  const got = new Uint8Array(data.length);
  let n = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      s.on("data", (c: Uint8Array) => {
        got.set(c.subarray(0, got.length - n), n);
        n += c.length;
        if (n >= got.length) resolve();
      });
      s.once("end", () => reject(new Error(`echo ended after ${n} of ${data.length} bytes`)));
      s.once("error", reject);
      s.once("connect", () => s.write(data));
    });
  } finally {
    s.destroy();
  }
  return got;
}

/** Sends one datagram to `host:port` and resolves with the first answer (rejects after 3 s). */
async function udpRoundTrip(host: string, port: number, data: Uint8Array): Promise<Uint8Array> {
  const s = dgram.createSocket("udp4");
  try {
    return await within(
      3000,
      "UDP answer",
      new Promise<Uint8Array>((resolve) => {
        s.on("message", (m: Uint8Array) => resolve(m));
        s.send(data, port, host);
      }),
    );
  } finally {
    s.close();
  }
}

Deno.test({
  name:
    "HA: 3 replicas behind HAProxy on the host-cluster registry; peer hops; kill -9 and a rolling restart",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const env = await startHa();
    const backends: Backend[] = [];
    /** Loads still running when a step fails are stopped at the end. */
    const loads: { stop(): Promise<unknown> }[] = [];
    const step = (name: string, fn: () => Promise<void>) =>
      t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });
    /** A replica (current) that holds no session of `cluster`. */
    const forwarderFor = (cluster: string) => env.replicas.find((r) => sessionsOn(r, cluster) === 0);
    try {
      await step("every replica answers for every cluster: locally or through the holder", async () => {
        let forwarded = 0;
        for (const [slot, r] of env.replicas.entries()) {
          const from = auditOf(r.hub).length;
          for (const c of clusterNames) {
            const { status } = await getOnce(
              env.ports[slot]!,
              `/clusters/${c}/api/v1/namespaces/default`,
              env.tls,
            );
            assert.equal(status, 200, `replica ${r.id} → ${c}`);
          }
          await eventually(5_000, () => assert.equal(auditOf(r.hub).slice(from).length, clusterNames.length));
          for (const line of auditOf(r.hub).slice(from)) {
            const c = String(line.cluster);
            assert.equal(line.status, 200, JSON.stringify(line));
            if (sessionsOn(r, c) > 0) {
              assert.ok(line.agent && !line.via, `${r.id} holds ${c}: ${JSON.stringify(line)}`);
            } else {
              forwarded++;
              const via = env.replicas.find((x) => x.id === line.via);
              assert.ok(
                via && sessionsOn(via, c) > 0,
                `${r.id} forwarded ${c} to a holder: ${JSON.stringify(line)}`,
              );
            }
          }
        }
        // ha-b's two agents hold one tunnel each: some replica has no ha-b session.
        assert.ok(forwarded >= 1, "no request went through a peer");
        const f = forwarderFor("ha-b")!;
        assert.ok(sampleSum(await metricsOf(f), "tower_peer_forwards_total", { result: "ok" }) >= 1);
      });

      await step(
        "exec, port-forward 20 MiB, a watch and LoadBalancer TCP/UDP across a peer hop",
        async () => {
          const b = env.clusters["ha-b"];
          const f = forwarderFor("ha-b");
          assert.ok(f, "a replica without an ha-b session");
          const kc = await env.kubeconfig(env.ports[env.replicas.indexOf(f)]!);
          const kubectl = (args: string[], stdin?: string) =>
            runCommand(b.binaries.kubectl, [`--kubeconfig=${kc}`, "--context=ha-b", ...args], { stdin });
          const spawn = (args: string[]) =>
            running(
              new Deno.Command(b.binaries.kubectl, {
                args: [`--kubeconfig=${kc}`, "--context=ha-b", ...args],
                stdout: "piped",
                stderr: "piped",
              }).spawn(),
            );
          const from = auditOf(f.hub).length;
          await b.createPod("box");
          const exec = await kubectl(
            ["exec", "-i", "box", "--", "sh", "-c", "read l; echo got:$l"],
            "peer-hop\n",
          );
          assert.equal(exec.code, 0, exec.stderr);
          assert.equal(exec.stdout, "got:peer-hop\n");

          const echoPort = b.forwardPorts[0]!;
          backends.push(
            await spawnListening(
              b,
              `import net from "node:net";
           net.createServer({ allowHalfOpen: true }, (s) => { s.on("error", () => {}); s.pipe(s); })
             .listen(${echoPort}, "0.0.0.0", () => console.log("listening"));`,
              "echo",
            ),
          );
          const pf = spawn(["port-forward", "--address=127.0.0.1", "pod/box", `:${echoPort}`]);
          try {
            await pf.out.waitFor((s) => /Forwarding from 127\.0\.0\.1:\d+/.test(s), "Forwarding from");
            const port = Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(pf.out.text)![1]);
            const data = randomBytes(20 * MiB);
            const got = await within(120_000, "20 MiB echo", echoRoundTrip("127.0.0.1", port, data));
            assert.equal(got.length, data.length);
            assert.equal(await sha256Hex(new Uint8Array(got)), await sha256Hex(data));
          } finally {
            await pf.stop();
          }

          assert.equal((await b.kubectl(["create", "configmap", "before-watch"])).code, 0);
          const w = spawn(["get", "configmaps", "--watch", "-o", "name"]);
          try {
            // Listed first, then the watch carries what comes after.
            await w.out.waitForText("configmap/before-watch", 20_000);
            assert.equal((await b.kubectl(["create", "configmap", "seen-through-peer"])).code, 0);
            await w.out.waitForText("configmap/seen-through-peer", 20_000);
          } finally {
            await w.stop();
          }

          // LoadBalancer: a TCP echo and a UDP echo behind one Service of ha-b, reached on f's public ports.
          backends.push(
            await spawnListening(
              b,
              `import dgram from "node:dgram";
           import net from "node:net";
           net.createServer({ allowHalfOpen: true }, (s) => { s.on("error", () => {}); s.pipe(s); })
             .listen(7101, "0.0.0.0", () => {
               const u = dgram.createSocket("udp4");
               u.on("message", (m, r) => u.send(m, r.port, r.address));
               u.bind(7102, "0.0.0.0", () => console.log("listening"));
             });`,
              "lb echo",
            ),
          );
          const objects = {
            apiVersion: "v1",
            kind: "List",
            items: [
              {
                apiVersion: "v1",
                kind: "Service",
                metadata: { name: "echo", namespace: "default" },
                spec: {
                  type: "LoadBalancer",
                  loadBalancerClass: "tower.dev/lb",
                  ports: [
                    { name: "tcp", port: 7101, protocol: "TCP" },
                    { name: "udp", port: 7102, protocol: "UDP" },
                  ],
                },
              },
              ...(["TCP", "UDP"] as const).map((protocol) => ({
                apiVersion: "discovery.k8s.io/v1",
                kind: "EndpointSlice",
                metadata: {
                  name: `echo-${protocol.toLowerCase()}`,
                  namespace: "default",
                  labels: { "kubernetes.io/service-name": "echo" },
                },
                addressType: "IPv4",
                ports: [{ name: protocol.toLowerCase(), port: protocol === "TCP" ? 7101 : 7102, protocol }],
                endpoints: [{ addresses: [b.nsAddress], conditions: { ready: true } }],
              })),
            ],
          };
          const applied = await b.kubectl(["apply", "-f", "-"], { stdin: JSON.stringify(objects) });
          assert.equal(applied.code, 0, applied.stderr);
          const lbPorts = await eventually(60_000, async () => {
            const r = await b.kubectl(["get", "svc", "echo", "-o", "json"]);
            const ports = JSON.parse(r.stdout).status?.loadBalancer?.ingress?.[0]?.ports as
              | { port: number; protocol: string; error?: string }[]
              | undefined;
            const tcp = ports?.find((p) => p.protocol === "TCP" && !p.error)?.port;
            const udp = ports?.find((p) => p.protocol === "UDP" && !p.error)?.port;
            assert.ok(tcp && udp, r.stdout);
            return { tcp, udp };
          });
          const before = sampleSum(await metricsOf(f), "tower_peer_forwards_total", { result: "ok" });
          const data = randomBytes(MiB);
          const echoed = await eventually(30_000, () => echoRoundTrip(f.lbHost, lbPorts.tcp, data));
          assert.equal(
            await sha256Hex(new Uint8Array(echoed)),
            await sha256Hex(data),
            "TCP through f's port",
          );
          const dgramOut = randomBytes(512);
          const dgramIn = await eventually(15_000, () => udpRoundTrip(f.lbHost, lbPorts.udp, dgramOut));
          assert.deepEqual(new Uint8Array(dgramIn), dgramOut, "UDP through f's port");
          const after = sampleSum(await metricsOf(f), "tower_peer_forwards_total", { result: "ok" });
          assert.ok(after >= before + 2, `f opened its LB channels through a peer (${before} → ${after})`);

          // f has no ha-b session, so each of these went through a peer: its audit lines say which.
          await eventually(10_000, () => {
            const lines = auditOf(f.hub).slice(from).filter((l) => l.cluster === "ha-b");
            const upgrades = lines.filter((l) => l.upgraded);
            assert.ok(upgrades.some((l) => String(l.path).endsWith("/exec")), JSON.stringify(lines));
            assert.ok(upgrades.some((l) => String(l.path).endsWith("/portforward")), JSON.stringify(lines));
            assert.ok(lines.some((l) => l.verb === "watch"), JSON.stringify(lines));
            for (const l of lines) {
              assert.ok(l.via && !l.agent, `not through a peer: ${JSON.stringify(l)}`);
            }
          });
        },
      );

      await step(
        "kill -9 of a replica holding agents under 20 req/s: only its requests in flight fail",
        async () => {
          const load = steadyLoad(env, 20, 120_000);
          loads.push(load);
          await eventually(
            20_000,
            () => assert.ok(load.results.some((r) => r.at >= 3000 && r.status === 200)),
          );
          // A replica that holds an ha-b session while another replica holds one too (so ha-b keeps an agent),
          // else one holding ha-a sessions only.
          const holdersB = env.replicas.filter((r) => sessionsOn(r, "ha-b") > 0);
          const victim = holdersB.length > 1
            ? holdersB[0]!
            : env.replicas.find((r) => sessionsOn(r, "ha-a") > 0 && sessionsOn(r, "ha-b") === 0)!;
          assert.ok(victim, "a replica to kill");
          const slot = env.replicas.indexOf(victim);
          const agentFrom = env.agents.map((a) => a.proc.lines.length);
          const killedAt = performance.now();
          await victim.hub.stop("SIGKILL");
          const killedBy = load.elapsed();
          // Every agent that lost a tunnel holds its K again within 15 s.
          for (const [i, a] of env.agents.entries()) {
            const lost = a.proc.lines.slice(agentFrom[i]).some((l) =>
              l.msg === "disconnected from hub" && l.replica === victim.id
            );
            if (!lost) {
              await a.proc.waitFor(
                (l: LogLine) => l.msg === "disconnected from hub" && l.replica === victim.id,
                "its tunnel to the killed replica to end",
                Math.max(1, 15_000 - (performance.now() - killedAt)),
                agentFrom[i],
              ).catch(() => {}); // it held none
            }
            if (!tunnelsHeld(a.proc).includes(victim.id)) {
              await eventually(Math.max(1, 15_000 - (performance.now() - killedAt)), () => {
                const held = tunnelsHeld(a.proc).filter((r) => r !== victim.id);
                assert.equal(
                  held.length,
                  tunnelsOf[a.cluster],
                  `${a.proc.name} holds ${held}; its log since the kill:\n` +
                    a.proc.lines.slice(agentFrom[i]).map((l) => JSON.stringify(l)).join("\n"),
                );
              });
            }
          }
          assert.ok(performance.now() - killedAt <= 15_000 + 1000, "agents took longer than 15 s");
          while (load.elapsed() < killedBy + 12_000) await new Promise((r) => setTimeout(r, 250));
          const results = await load.stop();
          const failed = results.filter((r) => r.status !== 200);
          const afterKill = failed.filter((r) => r.at > killedBy);
          const odd = () =>
            JSON.stringify({
              killedBy,
              victim: victim.id,
              answers: env.every.flatMap((x) =>
                auditOf(x.hub).filter((l) => l.status !== 200).map((l) => ({ ...l, on: x.id }))
              ),
            });
          assert.deepEqual(
            afterKill,
            [],
            `requests started after the kill failed (${results.length} made): ${odd()}`,
          );
          const late = failed.filter((r) => r.at > killedBy + 10_000);
          assert.deepEqual(late, [], "requests still failing 10 s after the kill");
          // The killed replica's entries leave Cluster status once its lease lapses; cluster list shows
          // every live replica's agents.
          await env.startReplica(slot);
          await agentsSettled(env, 60_000);
          await eventually(60_000, async () => {
            for (const c of clusterNames) {
              const r = await env.access.kubectl(["-n", ns, "get", "clusters.tower.dev", c, "-o", "json"]);
              const hubs = (JSON.parse(r.stdout).status?.hubs ?? []) as { replica: string; agents: number }[];
              assert.ok(!hubs.some((h) => h.replica === victim.id), `${c}: ${JSON.stringify(hubs)}`);
              const want = env.replicas.map((x) => sessionsOn(x, c)).reduce((n, x) => n + x, 0);
              assert.equal(hubs.reduce((n, h) => n + h.agents, 0), want, `${c}: ${JSON.stringify(hubs)}`);
            }
            const list = await must(["cluster", "list", ...env.k8s]);
            for (const c of clusterNames) {
              const want = env.agents.filter((a) => a.cluster === c).length * tunnelsOf[c];
              assert.match(list, new RegExp(`^${c}\\s+${want}\\s`, "m"), list);
            }
          });
        },
      );

      await step(
        "rolling restart with drain under 20 req/s: no plain request fails, watches resume",
        async () => {
          const watches: ResumingWatch[] = [];
          const created: Record<string, string[]> = { "ha-a": [], "ha-b": [] };
          for (const c of clusterNames) {
            const r = await env.clusters[c].kubectl(["get", "configmaps", "-o", "json"]);
            watches.push(new ResumingWatch(env, c, JSON.parse(r.stdout).metadata.resourceVersion));
          }
          const load = steadyLoad(env, 20, 300_000);
          loads.push(load);
          let writing = true;
          // A ConfigMap in each cluster every 2 s (straight to its apiserver), which the watches must see.
          const writer = (async () => {
            for (let i = 0; writing && i < 150; i++) {
              for (const c of clusterNames) {
                const name = `roll-${i}`;
                const r = await env.clusters[c].kubectl(["create", "configmap", name]);
                assert.equal(r.code, 0, r.stderr);
                created[c]!.push(name);
              }
              await new Promise((r) => setTimeout(r, 2000));
            }
          })();
          try {
            for (let slot = 0; slot < 3; slot++) {
              const old = env.replicas[slot]!;
              old.hub.signal("SIGTERM");
              const status = await within(60_000, `replica ${old.id} drain`, old.hub.exited);
              assert.equal(status.code, 0, `replica ${old.id} did not drain cleanly`);
              await env.startReplica(slot);
              await agentsSettled(env, 60_000);
            }
          } finally {
            writing = false;
            await writer;
          }
          // The watches see everything written, the last objects too (bounded wait: they are resumed).
          await eventually(30_000, () => {
            for (const w of watches) {
              const missed = created[w.cluster]!.filter((n) => !w.names.has(n));
              assert.deepEqual(missed, [], `${w.cluster}: the resumed watch missed these`);
            }
          }).catch(() => {}); // the assertion below names what is missing
          const results = await load.stop();
          for (const w of watches) await w.stop();
          const failed = results.filter((r) => r.status !== 200);
          // HAProxy's log lines of connections that did not end normally (not --, nor closed by one side after data).
          const lbLog = () =>
            env.lb.log().split("\n").filter((l) =>
              / [a-zA-Z-]{2} \d+\/\d+\/\d+\/\d+\/\d+ /.test(l) && !/ (--|CD|cD|SD) \d/.test(l)
            )
              .slice(-40).join("\n");
          assert.deepEqual(
            failed,
            [],
            `${failed.length} of ${results.length} requests failed: ${
              JSON.stringify(failed)
            }; HAProxy:\n${lbLog()}`,
          );
          for (const w of watches) {
            assert.deepEqual(w.broken, [], `${w.cluster}: watches broken`);
            // Ended cleanly, after a whole event, at most once per restart: by the replica it landed on when
            // that one drains, or, carried through a draining replica, by the landing one on its notice.
            assert.ok(
              w.clean <= 3 && w.cut === 0,
              `${w.cluster}: ${w.clean} clean and ${w.cut} cut ends for 3 restarts`,
            );
            const missed = created[w.cluster]!.filter((n) => !w.names.has(n));
            assert.deepEqual(missed, [], `${w.cluster}: the resumed watch missed these`);
          }
        },
      );

      await step(
        "a user certificate on the peer link is refused; peers' own relays were logged",
        async () => {
          const r = env.replicas[0]!;
          const [host, port] = [r.peer.slice(0, r.peer.lastIndexOf(":")), Number(r.peer.split(":").pop())];
          const outcome = await new Promise<string>((resolve) => {
            const s = tls.connect({
              host,
              port,
              cert: env.tls.cert,
              key: env.tls.key,
              rejectUnauthorized: false,
            }, () => {
              s.write(`GET /peer/v1/routes?cluster=ha-a&endpoint=kubernetes HTTP/1.1\r\nHost: x\r\n\r\n`);
            });
            let got = "";
            s.on("data", (c: Uint8Array) => got += new TextDecoder().decode(c));
            s.on("error", (e) => resolve(`error: ${e.message}`));
            s.on("close", () => resolve(got || "closed"));
            setTimeout(() => {
              s.destroy();
              resolve(got || "no answer");
            }, 5000);
          });
          assert.ok(!/^HTTP\/1\.1 200/.test(outcome), `peer link accepted a user certificate: ${outcome}`);
          // The peer CA is never handed to users.
          const peerCa = await env.access.kubectl([
            "-n",
            ns,
            "get",
            "secret",
            "tower-hub-peer-ca",
            "-o",
            "json",
          ]);
          const peerCert = atob(JSON.parse(peerCa.stdout).data.cert);
          assert.notEqual(peerCert.trim(), env.tls.ca.trim());
          // Every forwarded request was relayed by a holder, which logged the replica that asked.
          const relayedFor = new Set(
            env.every.flatMap((x) =>
              x.hub.lines.filter((l) => l.msg === "peer channel relayed").map((l) => l.peer)
            ),
          );
          const asked = new Set(
            env.every.flatMap((x) => auditOf(x.hub).filter((l) => l.via).length ? [x.id] : []),
          );
          for (const id of asked) assert.ok(relayedFor.has(id), `nobody logged a relay for ${id}`);
        },
      );
    } finally {
      for (const l of loads) await l.stop();
      for (const bk of backends) await bk.stop();
      await env.stop();
    }
  },
});
