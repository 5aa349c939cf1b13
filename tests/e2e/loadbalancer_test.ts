/**
 * LoadBalancer Services end to end: a real cluster in its own network namespace, real TCP and DNS
 * servers inside it behind hand-written EndpointSlices (there is no endpoint controller), and clients in
 * the root namespace that reach them only through the hub's public ports. Covers allocation into
 * `status.loadBalancer`, bulk TCP, UDP flows, release, agent and hub restarts, endpoint readiness, and
 * an exhausted port range.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { createHash } from "node:crypto";
import { type Backend, spawnListening, startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import type { TestCluster } from "../cluster/cluster.ts";
import { type HubProcess, startHub } from "../helpers/tower_procs.ts";
import { connect, patternChunk } from "../helpers/net_servers.ts";

const clusterName = "lbc";
const ns = "lb";
/** Three TCP ports: `echo`, `ident` and `full1` take them all, so `full2` cannot get one. */
const portRange = [31871, 31873] as const;
const hubArgs = ["--lb-ports", `${portRange[0]}-${portRange[1]}`, "--lb-address", "127.0.0.1"];

/**
 * Starts a tiny Deno server inside the namespace on 0.0.0.0:`port`: `echo` echoes and half-closes when
 * the client does; `ident` answers `ident` and closes.
 */
async function startBackend(
  cluster: TestCluster,
  mode: "echo" | "ident",
  port: number,
  ident = "",
): Promise<Backend> {
  const code = `
    import net from "node:net";
    const mode = ${JSON.stringify(mode)};
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => {});
      if (mode === "echo") s.pipe(s);
      else {
        s.resume();
        s.end(${JSON.stringify(ident)} + "\\n");
      }
    });
    server.listen(${port}, "0.0.0.0", () => console.log("listening"));
  `;
  return await spawnListening(cluster, code, `backend ${mode}:${port}`);
}

/** Applies objects (a kubectl `List`) as the cluster admin. */
async function apply(cluster: TestCluster, items: unknown[]): Promise<void> {
  const r = await cluster.kubectl(["apply", "-f", "-"], {
    stdin: JSON.stringify({ apiVersion: "v1", kind: "List", items }),
  });
  assert.equal(r.code, 0, r.stderr);
}

/** A selector-less LoadBalancer Service of Tower's class. */
function lbService(name: string, ports: { port: number; targetPort: number; protocol?: string }[]): unknown {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: ns },
    spec: {
      type: "LoadBalancer",
      loadBalancerClass: "tower.dev/lb",
      ports: ports.map((p) => ({ protocol: "TCP", ...p })),
    },
  };
}

/** An EndpointSlice of `service` with one endpoint at the namespace's address. */
function slice(
  cluster: TestCluster,
  name: string,
  service: string,
  port: number,
  protocol = "TCP",
  ready = true,
): unknown {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: ns, labels: { "kubernetes.io/service-name": service } },
    addressType: "IPv4",
    ports: [{ port, protocol }],
    endpoints: [{ addresses: [cluster.nsAddress], conditions: { ready } }],
  };
}

interface ServiceJson {
  status?: {
    loadBalancer?: {
      ingress?: { ip?: string; ports?: { port: number; protocol: string; error?: string }[] }[];
    };
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

async function getService(cluster: TestCluster, name: string): Promise<ServiceJson> {
  const r = await cluster.kubectl(["get", "svc", "-n", ns, name, "-o", "json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Waits until the Service's status names a public port; returns it (checks the address too). */
async function publicPort(cluster: TestCluster, name: string, protocol = "TCP"): Promise<number> {
  return await eventually(30_000, async () => {
    const s = await getService(cluster, name);
    const ingress = s.status?.loadBalancer?.ingress?.[0];
    assert.equal(ingress?.ip, "127.0.0.1", `${name}: ${JSON.stringify(s.status)}`);
    const p = ingress?.ports?.find((x) => x.protocol === protocol && !x.error);
    assert.ok(p, `${name}: ${JSON.stringify(s.status)}`);
    assert.ok(p.port >= portRange[0] && p.port <= portRange[1], `port ${p.port} outside the range`);
    const cond = s.status?.conditions?.find((c) => c.type === "TowerPortsAllocated");
    assert.equal(cond?.status, "True", JSON.stringify(s.status?.conditions));
    return p.port;
  });
}

/** Waits until the Service's status names exactly `n` public TCP ports; returns them. */
async function publicPorts(cluster: TestCluster, name: string, n: number): Promise<number[]> {
  return await eventually(30_000, async () => {
    const s = await getService(cluster, name);
    const ports = (s.status?.loadBalancer?.ingress?.[0]?.ports ?? []).filter((x) => !x.error).map((x) =>
      x.port
    );
    assert.equal(ports.length, n, `${name}: ${JSON.stringify(s.status)}`);
    return ports;
  });
}

/** Sends `total` pattern bytes, half-closes, and hashes what comes back until the server closes. */
async function echoThrough(port: number, total: number): Promise<{ sent: string; got: string; n: number }> {
  const s = await connect(port);
  const sent = createHash("sha256");
  const got = createHash("sha256");
  let n = 0;
  // A hub that cannot reach the cluster yet resets the connection: fail (so callers may retry), never hang.
  const failed = new Promise<never>((_, reject) => {
    s.on("error", reject);
    s.once("close", () => reject(new Error("connection closed before the echo ended")));
  });
  failed.catch(() => {});
  const received = new Promise<void>((resolve) => {
    s.on("data", (c: Uint8Array) => {
      got.update(c);
      n += c.length;
    });
    s.once("end", resolve);
  });
  try {
    const chunk = 1 << 20;
    for (let off = 0, seed = 1; off < total; off += chunk, seed++) {
      const data = patternChunk(seed, Math.min(chunk, total - off));
      sent.update(data);
      if (!s.write(data)) await Promise.race([new Promise((r) => s.once("drain", r)), failed]);
    }
    s.end();
    await Promise.race([received, failed]);
  } finally {
    s.destroy();
  }
  return { sent: sent.digest("hex"), got: got.digest("hex"), n };
}

/** Reads what an `ident` backend answers on a fresh connection. */
async function identOf(port: number): Promise<string> {
  const s = await connect(port);
  let text = "";
  await new Promise<void>((resolve, reject) => {
    s.setEncoding("utf8");
    s.on("data", (c: string) => text += c);
    s.once("end", resolve);
    s.once("close", resolve);
    s.once("error", reject);
  });
  s.destroy();
  return text.trim();
}

/** Resolves true when a connection to 127.0.0.1:port is refused. */
function refused(port: number): Promise<boolean> {
  return connect(port).then((s) => {
    s.destroy();
    return false;
  }, (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED");
}

// A minimal DNS client: one A question per query, one A answer expected.

/** An A query for `name` with transaction `id` (recursion desired). */
function dnsQuery(id: number, name: string): Uint8Array {
  const qname = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  const b = new Uint8Array(12 + qname.length + 1 + 4);
  const v = new DataView(b.buffer);
  v.setUint16(0, id);
  v.setUint16(2, 0x0100);
  v.setUint16(4, 1);
  b.set(qname, 12);
  v.setUint16(12 + qname.length + 1, 1); // type A
  v.setUint16(12 + qname.length + 3, 1); // class IN
  return b;
}

/** Reads a (possibly compressed) name at `off`; returns it and the offset after it. */
function readName(b: Uint8Array, off: number): [string, number] {
  const labels: string[] = [];
  let end = -1;
  for (let hops = 0; hops < 20; hops++) {
    const len = b[off]!;
    if (len === 0) return [labels.join("."), end < 0 ? off + 1 : end];
    if ((len & 0xc0) === 0xc0) {
      if (end < 0) end = off + 2;
      off = ((len & 0x3f) << 8) | b[off + 1]!;
      continue;
    }
    labels.push(new TextDecoder().decode(b.subarray(off + 1, off + 1 + len)));
    off += 1 + len;
  }
  throw new Error("DNS name too long or looping");
}

/** Id, question name and A addresses of a response. */
function dnsAnswer(b: Uint8Array): { id: number; name: string; addresses: string[] } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const id = v.getUint16(0);
  const ancount = v.getUint16(6);
  let [name, off] = readName(b, 12);
  off += 4;
  const addresses: string[] = [];
  for (let i = 0; i < ancount; i++) {
    off = readName(b, off)[1];
    const type = v.getUint16(off);
    const len = v.getUint16(off + 8);
    if (type === 1 && len === 4) addresses.push([...b.subarray(off + 10, off + 14)].join("."));
    off += 10 + len;
  }
  return { id, name, addresses };
}

/** Number of DNS names dnsmasq answers: hN.test → 10.0.N.1. */
const dnsNames = 20;

/** One client socket (its own source port, so its own flow) sending `count` queries, 10 in flight. */
async function dnsClient(port: number, client: number, count: number): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
  const pending = new Map<number, { name: string; done: () => void; fail: (e: Error) => void }>();
  socket.on("message", (msg: Uint8Array) => {
    const a = dnsAnswer(msg);
    const p = pending.get(a.id);
    if (!p) return;
    pending.delete(a.id);
    const n = Number(/^h(\d+)\.test$/.exec(p.name)?.[1]);
    if (a.name !== p.name || a.addresses.join() !== `10.0.${n}.1`) {
      p.fail(new Error(`query ${a.id} for ${p.name} got ${a.name} → ${a.addresses.join()}`));
    } else p.done();
  });
  let answered = 0;
  try {
    let next = 0;
    const lane = async () => {
      while (next < count) {
        const i = next++;
        const id = client * 1000 + i;
        const name = `h${(client * count + i) % dnsNames + 1}.test`;
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no answer to query ${id} (${name})`)), 10_000);
          pending.set(id, {
            name,
            done: () => {
              clearTimeout(timer);
              resolve();
            },
            fail: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          });
          socket.send(dnsQuery(id, name), port, "127.0.0.1");
        });
        answered++;
      }
    };
    await Promise.all(Array.from({ length: 10 }, lane));
  } finally {
    await new Promise<void>((r) => socket.close(() => r()));
  }
  return answered;
}

/** Runs a command in the root namespace; returns its stdout. */
async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

Deno.test("loadbalancer: public hub ports for a cluster's LoadBalancer Services", async (t) => {
  const env: TowerEnv = await startTowerEnv({ clusters: [clusterName], hubArgs });
  const cluster = env.clusters.get(clusterName)!;
  const backends: Backend[] = [];
  let dnsmasq: Deno.ChildProcess | undefined;
  let restartedHub: HubProcess | undefined;
  // Steps start and stop processes and sockets that only the finally below cleans up; the test itself
  // keeps its sanitizers.
  const step = (name: string, fn: () => Promise<void>) =>
    t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });
  try {
    assert.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
    backends.push(await startBackend(cluster, "echo", 9000));
    let echoPort = 0;

    await step("TCP: status gets a public port, 50 MiB echo both ways byte-identical", async () => {
      await apply(cluster, [
        lbService("echo", [{ port: 80, targetPort: 9000 }]),
        slice(cluster, "echo-1", "echo", 9000),
      ]);
      echoPort = await publicPort(cluster, "echo");
      const r = await eventually(20_000, () => echoThrough(echoPort, 1024));
      assert.equal(r.got, r.sent);
      const big = await echoThrough(echoPort, 50 << 20);
      assert.equal(big.n, 50 << 20);
      assert.equal(big.got, big.sent, "echoed bytes differ");
    });

    await step("UDP: a DNS server answers dig and 1,000 queries from 20 client ports", async () => {
      dnsmasq = cluster.spawnInNetns([
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--port=5353",
        `--listen-address=${cluster.nsAddress}`,
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        ...Array.from({ length: dnsNames }, (_, i) => `--address=/h${i + 1}.test/10.0.${i + 1}.1`),
      ], { stdout: "null", stderr: "null" });
      await apply(cluster, [
        lbService("dns", [{ port: 53, targetPort: 5353, protocol: "UDP" }]),
        slice(cluster, "dns-1", "dns", 5353, "UDP"),
      ]);
      const dnsPort = await publicPort(cluster, "dns", "UDP");
      const answer = await eventually(20_000, async () => {
        const out = await run("dig", ["@127.0.0.1", "-p", String(dnsPort), "h1.test", "+short", "+tries=1"]);
        assert.equal(out.trim(), "10.0.1.1");
        return out.trim();
      });
      assert.equal(answer, "10.0.1.1");
      assert.equal(
        (await run("dig", ["@127.0.0.1", "-p", String(dnsPort), "h7.test", "+short"])).trim(),
        "10.0.7.1",
      );
      const counts = await Promise.all(Array.from({ length: 20 }, (_, c) => dnsClient(dnsPort, c, 50)));
      assert.equal(counts.reduce((a, b) => a + b, 0), 1000);
    });

    await step("deleting a Service closes its port; the next Service gets the released port", async () => {
      await apply(cluster, [
        lbService("tmp1", [{ port: 80, targetPort: 9000 }]),
        slice(cluster, "tmp1-1", "tmp1", 9000),
      ]);
      const p1 = await publicPort(cluster, "tmp1");
      assert.notEqual(p1, echoPort);
      const r = await eventually(20_000, () => echoThrough(p1, 4096));
      assert.equal(r.got, r.sent);
      assert.equal((await cluster.kubectl(["delete", "svc", "-n", ns, "tmp1", "--wait=false"])).code, 0);
      const started = Date.now();
      await eventually(10_000, async () => assert.ok(await refused(p1), `port ${p1} still open`));
      assert.ok(Date.now() - started < 10_000);
      await apply(cluster, [
        lbService("tmp2", [{ port: 80, targetPort: 9000 }]),
        slice(cluster, "tmp2-1", "tmp2", 9000),
      ]);
      const p2 = await publicPort(cluster, "tmp2");
      assert.equal(p2, p1, "the released port is handed out again");
      const r2 = await eventually(20_000, () => echoThrough(p2, 4096));
      assert.equal(r2.got, r2.sent);
      assert.equal((await cluster.kubectl(["delete", "svc", "-n", ns, "tmp2", "--wait=false"])).code, 0);
      await eventually(10_000, async () => assert.ok(await refused(p2), `port ${p2} still open`));
    });

    await step("agent restart and hub restart keep the public port; traffic flows again", async () => {
      await env.agents.get(clusterName)!.stop();
      env.agents.set(clusterName, await env.startAgent(clusterName, "agent-lbc-2"));
      assert.equal(await publicPort(cluster, "echo"), echoPort);
      const viaNewAgent = await eventually(20_000, () => echoThrough(echoPort, 1 << 20));
      assert.equal(viaNewAgent.got, viaNewAgent.sent);

      const port = env.hub.port;
      await env.hub.stop();
      assert.ok(await refused(echoPort), "public port closed with the hub");
      const agent = env.agents.get(clusterName)!;
      const connectedBefore = agent.count("connected to hub");
      restartedHub = await startHub({
        dataDir: env.dataDir,
        port,
        args: ["--listen", `0.0.0.0:${port}`, "--name", cluster.hubAddress, ...hubArgs],
      });
      // The registry kept the allocation: the new hub listens on it before any agent is back.
      await restartedHub.waitFor(
        (l) => l.msg === "lb port listening" && l.publicPort === echoPort,
        "lb port listening on the echo port",
      );
      await agent.waitFor(
        () => agent.count("connected to hub") > connectedBefore,
        "agent reconnected",
        30_000,
      );
      assert.equal(await publicPort(cluster, "echo"), echoPort);
      const afterRestart = await eventually(20_000, () => echoThrough(echoPort, 1 << 20));
      assert.equal(afterRestart.got, afterRestart.sent);
    });

    await step(
      "two agents: traffic survives losing one; a dead backend is skipped; a removed port is freed",
      async () => {
        const first = env.agents.get(clusterName)!;
        const second = await env.startAgent(clusterName, "agent-lbc-3");
        env.agents.set(clusterName, second);
        await second.waitForMsg("connected to hub", 30_000);
        const dnsPort = await publicPort(cluster, "dns", "UDP");
        await first.stop("SIGKILL");
        const tcp = await eventually(10_000, () => echoThrough(echoPort, 1 << 20));
        assert.equal(tcp.got, tcp.sent);
        assert.equal(await eventually(15_000, () => dnsClient(dnsPort, 7, 20)), 20);

        // Two named ports; port a has a backend nobody listens on (ready all the same) and a live one.
        const two = (ports: { name: string; port: number }[]) => ({
          ...(lbService("two", []) as Record<string, unknown>),
          spec: {
            type: "LoadBalancer",
            loadBalancerClass: "tower.dev/lb",
            ports: ports.map((p) => ({ ...p, targetPort: 9000, protocol: "TCP" })),
          },
        });
        const twoSlice = (name: string, aPort: number) => ({
          ...(slice(cluster, name, "two", aPort) as Record<string, unknown>),
          ports: [{ name: "a", port: aPort, protocol: "TCP" }, { name: "b", port: 9000, protocol: "TCP" }],
        });
        await apply(cluster, [
          two([{ name: "a", port: 80 }, { name: "b", port: 81 }]),
          twoSlice("two-dead", 9099),
          twoSlice("two-live", 9000),
        ]);
        const ports = await publicPorts(cluster, "two", 2);
        const skippedBefore = second.count("service backend dial failed; trying the next");
        for (const p of ports) {
          for (let i = 0; i < 6; i++) {
            const r = await eventually(20_000, () => echoThrough(p, 4096));
            assert.equal(r.got, r.sent);
          }
        }
        assert.ok(
          second.count("service backend dial failed; trying the next") > skippedBefore,
          "the dead backend was tried and skipped",
        );
        await apply(cluster, [two([{ name: "a", port: 80 }])]);
        const [kept] = await publicPorts(cluster, "two", 1);
        assert.ok(kept !== undefined && ports.includes(kept));
        const removed = ports.find((p) => p !== kept)!;
        await eventually(10_000, async () => assert.ok(await refused(removed), `port ${removed} still open`));
        const r = await echoThrough(kept, 4096);
        assert.equal(r.got, r.sent);
        assert.equal((await cluster.kubectl(["delete", "svc", "-n", ns, "two", "--wait=false"])).code, 0);
        await eventually(10_000, async () => assert.ok(await refused(kept), `port ${kept} still open`));
      },
    );

    await step("a not-ready endpoint gets no new connections; before, round robin hits both", async () => {
      backends.push(await startBackend(cluster, "ident", 9101, "A"));
      backends.push(await startBackend(cluster, "ident", 9102, "B"));
      await apply(cluster, [
        lbService("ident", [{ port: 80, targetPort: 9100 }]),
        slice(cluster, "ident-a", "ident", 9101),
        slice(cluster, "ident-b", "ident", 9102),
      ]);
      const port = await publicPort(cluster, "ident");
      const seen = await eventually(20_000, async () => {
        const got: string[] = [];
        for (let i = 0; i < 20; i++) got.push(await identOf(port));
        assert.deepEqual(new Set(got), new Set(["A", "B"]), got.join());
        return got;
      });
      assert.ok(seen.filter((x) => x === "A").length >= 5, `round robin: ${seen.join()}`);
      const r = await cluster.kubectl([
        "patch",
        "endpointslice",
        "-n",
        ns,
        "ident-b",
        "--type=json",
        "-p",
        JSON.stringify([{ op: "replace", path: "/endpoints/0/conditions/ready", value: false }]),
      ]);
      assert.equal(r.code, 0, r.stderr);
      await eventually(10_000, async () => {
        const got: string[] = [];
        for (let i = 0; i < 20; i++) got.push(await identOf(port));
        assert.deepEqual(got, Array(20).fill("A"));
      });
    });

    await step(
      "an exhausted range: TowerPortsAllocated=False and a Warning Event, then recovery",
      async () => {
        await apply(cluster, [
          lbService("full1", [{ port: 80, targetPort: 9000 }]),
          slice(cluster, "full1-1", "full1", 9000),
        ]);
        const p1 = await publicPort(cluster, "full1");
        await apply(cluster, [
          lbService("full2", [{ port: 80, targetPort: 9000 }]),
          slice(cluster, "full2-1", "full2", 9000),
        ]);
        const cond = await eventually(30_000, async () => {
          const s = await getService(cluster, "full2");
          const c = s.status?.conditions?.find((x) => x.type === "TowerPortsAllocated");
          assert.equal(c?.status, "False", JSON.stringify(s.status));
          assert.deepEqual(s.status?.loadBalancer?.ingress ?? [], []);
          return c!;
        });
        assert.equal(cond.reason, "AllocationFailed");
        assert.match(cond.message, new RegExp(`no free TCP port in ${portRange[0]}-${portRange[1]}`));
        await eventually(20_000, async () => {
          const r = await cluster.kubectl([
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.kind=Service,involvedObject.name=full2,type=Warning",
            "-o",
            "json",
          ]);
          assert.equal(r.code, 0, r.stderr);
          const items = JSON.parse(r.stdout).items as { reason: string; message: string }[];
          assert.ok(
            items.some((e) => e.reason === "AllocationFailed" && /no free TCP port/.test(e.message)),
            r.stdout,
          );
        });
        assert.equal((await cluster.kubectl(["delete", "svc", "-n", ns, "full1", "--wait=false"])).code, 0);
        assert.equal(await publicPort(cluster, "full2"), p1, "full2 gets the port full1 released");
      },
    );
  } finally {
    await restartedHub?.stop();
    try {
      dnsmasq?.kill("SIGTERM");
    } catch {
      // already gone
    }
    await dnsmasq?.status;
    await Promise.all(backends.map((b) => b.stop()));
    await env.stop();
  }
});
