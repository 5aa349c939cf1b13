/**
 * The tunnel end to end: hub and agent run as processes with their permission sets, real TCP servers
 * behind the agent, real clients in front of the hub's `--forward` listeners.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import type tls from "node:tls";
// @ts-types="@types/ws"
import { WebSocket } from "ws";
import {
  addCluster,
  type HubProcess,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import {
  connect,
  echoServer,
  freePort,
  hashServer,
  patternChunk,
  roundTrip,
  stallServer,
  type TestServer,
} from "../helpers/net_servers.ts";
import { waitForHubStatus } from "../helpers/hub_status.ts";

const MiB = 1 << 20;

/** A hub with one cluster and one connected agent publishing the given endpoints via `--forward` ports. */
async function tunnelWith(
  endpoints: Record<string, TestServer>,
  opts: { hubArgs?: string[]; agentArgs?: string[]; port?: number; caFile?: string } = {},
): Promise<{
  hub: HubProcess;
  agent: TowerProcess;
  forward: Record<string, number>;
  dataDir: string;
  cluster: Awaited<ReturnType<typeof addCluster>>;
  stop: () => Promise<void>;
}> {
  const dataDir = await scratchDir("tunnel");
  const cluster = await addCluster(dataDir, "alpha");
  const forward: Record<string, number> = {};
  for (const name of Object.keys(endpoints)) forward[name] = await freePort();
  const plain = opts.hubArgs?.includes("--plain-http") ?? false;
  const hub = await startHub({
    dataDir,
    plain,
    ...(opts.port ? { port: opts.port } : {}),
    args: [
      ...Object.entries(forward).flatMap(([name, port]) => ["--forward", `127.0.0.1:${port}=alpha/${name}`]),
      ...(opts.hubArgs ?? []),
    ],
  });
  const agent = startAgent({
    hubUrl: hub.url,
    cluster: "alpha",
    token: cluster.token,
    fingerprint: cluster.fingerprint,
    ...(plain ? {} : { caFile: opts.caFile ?? cluster.caFile }),
    publish: Object.entries(endpoints).map(([name, s]) => `${name}=127.0.0.1:${s.port}`),
    args: opts.agentArgs ?? [],
  });
  await agent.waitForMsg("connected to hub");
  return {
    hub,
    agent,
    forward,
    dataDir,
    cluster,
    stop: async () => {
      await agent.stop();
      await hub.stop();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** Streams `total` pattern bytes into a socket with backpressure, hashing what was sent. */
async function sendPattern(s: net.Socket, total: number, seed: number): Promise<string> {
  const h = createHash("sha256");
  const chunk = 1 * MiB;
  for (let sent = 0, i = 0; sent < total; sent += chunk, i++) {
    const piece = patternChunk(seed + i, Math.min(chunk, total - sent));
    h.update(piece);
    if (!s.write(piece)) await new Promise((r) => s.once("drain", r));
  }
  s.end();
  return h.digest("hex");
}

Deno.test("256 MiB through one channel arrives byte-identical", async () => {
  const sink = await hashServer();
  const t = await tunnelWith({ hash: sink });
  try {
    const s = await connect(t.forward.hash!);
    let answer = "";
    const answered = new Promise<void>((resolve) => {
      s.on("data", (c: Uint8Array) => void (answer += new TextDecoder().decode(c)));
      s.once("end", () => resolve());
    });
    const sentHash = await sendPattern(s, 256 * MiB, 7);
    await answered;
    s.destroy();
    assert.equal(answer.trim(), `${sentHash} ${256 * MiB}`);
  } finally {
    await t.stop();
    await sink.close();
  }
});

Deno.test("200 concurrent channels of mixed sizes all arrive intact", async () => {
  const echo = await echoServer();
  const t = await tunnelWith({ echo });
  try {
    const sizes = [0, 1, 1000, 64 * 1024, 300 * 1024, 1 * MiB];
    const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const data = patternChunk(i + 1, sizes[i % sizes.length]!);
      const back = await roundTrip(t.forward.echo!, data);
      return back.length === data.length && Buffer.compare(back, data) === 0;
    }));
    assert.equal(results.filter((ok) => !ok).length, 0);
  } finally {
    await t.stop();
    await echo.close();
  }
});

Deno.test("a stalled channel does not hold up the others and buffers only a window's worth", async () => {
  const echo = await echoServer();
  const stall = await stallServer();
  const t = await tunnelWith({ echo, stall });
  try {
    // Fill the stalled channel until it pushes back and stays pushed back.
    const stalled = await connect(t.forward.stall!);
    let accepted = 0;
    const piece = patternChunk(3, 64 * 1024);
    for (;;) {
      if (stalled.write(piece)) {
        accepted += piece.length;
        continue;
      }
      accepted += piece.length;
      const drained = await Promise.race([
        new Promise<boolean>((r) => stalled.once("drain", () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 1500)),
      ]);
      if (!drained) break;
      assert.ok(accepted < 64 * MiB, `stalled channel kept accepting: ${accepted} bytes`);
    }
    // Meanwhile eight other channels move 4 MiB each through the same session.
    const started = performance.now();
    const ok = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      const data = patternChunk(100 + i, 4 * MiB);
      const back = await roundTrip(t.forward.echo!, data);
      return Buffer.compare(back, data) === 0;
    }));
    assert.deepEqual(ok, Array(8).fill(true));
    assert.ok(performance.now() - started < 60_000);
    // What the stalled channel absorbed: one SSH window (2 MiB) plus kernel socket buffers on both hops.
    const bufferedInKernelAtAgentTarget = [...stall.sockets].length;
    assert.equal(bufferedInKernelAtAgentTarget, 1);
    assert.ok(accepted < 24 * MiB, `stalled channel accepted ${accepted} bytes`);
    stalled.destroy();
  } finally {
    await t.stop();
    await echo.close();
    await stall.close();
  }
});

Deno.test("refused agents get clear errors and the hub keeps serving others", async () => {
  const echo = await echoServer();
  const t = await tunnelWith({ echo });
  const others: TowerProcess[] = [];
  try {
    await addCluster(t.dataDir, "beta");
    const base = { hubUrl: t.hub.url, caFile: t.cluster.caFile, fingerprint: t.cluster.fingerprint };
    const wrongToken = "tower_" + "A".repeat(43);
    const wrong = startAgent({ ...base, cluster: "beta", token: wrongToken, name: "wrong-token" });
    const unknown = startAgent({ ...base, cluster: "gamma", token: t.cluster.token, name: "unknown" });
    others.push(wrong, unknown);
    await wrong.waitForMsg("hub refused this agent");
    await unknown.waitForMsg("hub refused this agent");
    // The operator sees why; the agent only hears "refused". No token appears in any log.
    await t.hub.waitFor((l) => l.msg === "agent refused" && l.reason === "wrong token", "wrong token");
    await t.hub.waitFor(
      (l) => l.msg === "agent refused" && l.reason === "unknown cluster",
      "unknown cluster",
    );
    assert.ok(!t.hub.dump().includes(wrongToken) && !t.hub.dump().includes(t.cluster.token));
    assert.ok(!unknown.dump().includes(t.cluster.token));

    // A wrong pin is a configuration error: exit 2 naming both fingerprints.
    const otherFp = "SHA256:" + "x".repeat(43);
    const pinned = startAgent({
      ...base,
      cluster: "alpha",
      token: t.cluster.token,
      fingerprint: otherFp,
      name: "pin",
    });
    const status = await pinned.exited;
    await pinned.stop();
    assert.equal(status.code, 2);
    const text = pinned.dump();
    assert.ok(text.includes(otherFp) && text.includes(t.cluster.fingerprint), text);

    // Refused agents keep retrying (with backoff) instead of exiting: after the second refusal the agent
    // schedules another attempt (or makes it at once, when the jittered delay is 0) and is refused again.
    let exited = false;
    void wrong.exited.then(() => (exited = true));
    const second = await wrong.waitFor(
      (l) => l.msg === "hub refused this agent" && l.refusalsInARow === 2,
      "second refusal",
    );
    await wrong.waitFor(
      (l) => l.msg === "reconnecting" || Number(l.refusalsInARow) === 3,
      "a retry after the second refusal",
      20_000,
      wrong.lines.indexOf(second) + 1,
    );
    assert.ok(!exited, `the refused agent exited:\n${wrong.dump()}`);

    const data = patternChunk(9, 100_000);
    assert.equal(Buffer.compare(await roundTrip(t.forward.echo!, data), data), 0);
  } finally {
    for (const o of others) await o.stop();
    await t.stop();
    await echo.close();
  }
});

Deno.test("agents reconnect by themselves, with jitter, after a hub restart", async () => {
  const echo = await echoServer();
  const port = await freePort();
  const t = await tunnelWith({ echo }, { port, agentArgs: ["--backoff-max", "3s"] });
  const second = startAgent({
    hubUrl: t.hub.url,
    cluster: "alpha",
    token: t.cluster.token,
    fingerprint: t.cluster.fingerprint,
    caFile: t.cluster.caFile,
    publish: [`echo=127.0.0.1:${echo.port}`],
    args: ["--backoff-max", "3s"],
    name: "agent-2",
  });
  let hub2: HubProcess | undefined;
  try {
    await second.waitForMsg("connected to hub");
    const [from1, from2] = [t.agent.lines.length, second.lines.length];
    await t.hub.stop();
    hub2 = await startHub({
      dataDir: t.dataDir,
      port,
      args: ["--forward", `127.0.0.1:${t.forward.echo}=alpha/echo`],
    });
    await t.agent.waitForMsg("connected to hub", 20_000, from1);
    await second.waitForMsg("connected to hub", 20_000, from2);
    const delays = [t.agent, second].map((a) =>
      a.lines.slice(a === t.agent ? from1 : from2).filter((l) => l.msg === "reconnecting").map((l) =>
        Number(l.inMs)
      )
    );
    for (const d of delays.flat()) assert.ok(d >= 0 && d < 3000, `delay ${d} outside [0, cap)`);
    assert.notDeepEqual(delays[0], delays[1], "two agents waited exactly the same: no jitter");
    const data = patternChunk(11, 50_000);
    assert.equal(Buffer.compare(await roundTrip(t.forward.echo!, data), data), 0);
  } finally {
    await second.stop();
    await t.agent.stop();
    await hub2?.stop();
    await Deno.remove(t.dataDir, { recursive: true });
    await echo.close();
  }
});

Deno.test("a frozen agent is dropped within 3 keepalives and a killed one at once; traffic moves to the rest", async () => {
  const echo = await echoServer();
  const t = await tunnelWith({ echo }, { hubArgs: ["--keepalive", "1s"], agentArgs: ["--keepalive", "1s"] });
  const base = {
    hubUrl: t.hub.url,
    cluster: "alpha",
    token: t.cluster.token,
    fingerprint: t.cluster.fingerprint,
    caFile: t.cluster.caFile,
    publish: [`echo=127.0.0.1:${echo.port}`],
    args: ["--keepalive", "1s"],
  };
  const second = startAgent({ ...base, name: "agent-2" });
  const third = startAgent({ ...base, name: "agent-3" });
  try {
    await second.waitForMsg("connected to hub");
    await third.waitForMsg("connected to hub");
    await t.hub.waitFor(() => t.hub.count("agent connected") === 3, "3 agents");

    // SIGSTOP leaves the TCP connection open: only the keepalive can tell.
    const from = t.hub.lines.length;
    const frozenAt = performance.now();
    t.agent.signal("SIGSTOP");
    await t.hub.waitForMsg("agent disconnected", 10_000, from);
    const detectedMs = performance.now() - frozenAt;
    assert.ok(detectedMs <= 3 * 1000 + 1500, `frozen agent detected after ${detectedMs} ms`);

    // kill -9: the socket closes, the hub notices at once.
    const from2 = t.hub.lines.length;
    const killedAt = performance.now();
    await second.stop("SIGKILL");
    await t.hub.waitForMsg("agent disconnected", 5000, from2);
    assert.ok(performance.now() - killedAt < 1500);

    // Every connection now lands on the one healthy agent.
    const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const data = patternChunk(200 + i, 20_000);
      return Buffer.compare(await roundTrip(t.forward.echo!, data), data) === 0;
    }));
    assert.deepEqual(results, Array(20).fill(true));
    // `cluster list` reads the status file the hub rewrites within 250 ms of a change: once it shows one
    // agent of alpha, so does the command.
    await waitForHubStatus(
      t.dataDir,
      "one agent of alpha",
      (s) => s.clusters.alpha?.length === 1 || undefined,
    );
    const listed = (await serverCommand(["cluster", "list", "--data-dir", t.dataDir])).stdout;
    assert.match(listed, /^alpha\s+1\s/m);
  } finally {
    t.agent.signal("SIGCONT");
    await second.stop();
    await third.stop();
    await t.stop();
    await echo.close();
  }
});

/** Opens a raw WebSocket to the hub's tunnel path (TLS verified against the hub CA). */
function rawTunnel(
  hub: HubProcess,
  ca: string,
  protocols: string[] = ["tower-tunnel.v1"],
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(hub.url, protocols, { ca });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function closed(ws: WebSocket, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (ws.readyState === ws.CLOSED) return resolve(true);
    const timer = setTimeout(() => resolve(false), timeoutMs);
    ws.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

Deno.test("garbage on /tunnel closes only that connection", async () => {
  const echo = await echoServer();
  const t = await tunnelWith({ echo }, { hubArgs: ["--login-timeout", "2s"] });
  try {
    const ca = await Deno.readTextFile(t.cluster.caFile);
    const https = await import("node:https");
    const get = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = https.request(
          { host: "127.0.0.1", port: t.hub.port, path: "/tunnel", ca, headers },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on("error", reject);
        req.on("upgrade", (res, socket) => {
          socket.destroy();
          resolve(res.statusCode ?? 0);
        });
        req.end();
      });
    assert.equal(await get({}), 426, "plain GET");
    assert.equal(await get({ connection: "Upgrade", upgrade: "SPDY/3.1" }), 400, "non-WebSocket upgrade");

    // WebSocket, but not SSH.
    const junk = await rawTunnel(t.hub, ca);
    junk.send(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\nthis is not ssh\r\n".repeat(20)));
    assert.ok(await closed(junk, 5000), "junk connection stays open");

    // Truncated SSH: a valid identification, half a key exchange, then nothing.
    const cut = await rawTunnel(t.hub, ca);
    cut.send(new TextEncoder().encode("SSH-2.0-OpenSSH_9.9\r\n"));
    cut.send(new Uint8Array([0, 0, 1, 0, 10, 20, 1, 2, 3]));
    assert.ok(await closed(cut, 6000), "truncated SSH stays open past the login timeout");

    // Silent: opens the WebSocket and says nothing.
    const silent = await rawTunnel(t.hub, ca);
    assert.ok(await closed(silent, 6000), "silent connection stays open past the login timeout");

    const data = patternChunk(5, 100_000);
    assert.equal(Buffer.compare(await roundTrip(t.forward.echo!, data), data), 0);
    assert.equal(t.hub.count("agent disconnected"), 0);
  } finally {
    await t.stop();
    await echo.close();
  }
});

Deno.test("SIGHUP makes a connected agent reconnect at once", async () => {
  const echo = await echoServer();
  const t = await tunnelWith({ echo });
  try {
    const [fromAgent, fromHub] = [t.agent.lines.length, t.hub.lines.length];
    t.agent.signal("SIGHUP");
    await t.agent.waitForMsg("SIGHUP: reconnecting now", 5000, fromAgent);
    await t.hub.waitForMsg("agent disconnected", 5000, fromHub);
    const back = await t.agent.waitForMsg("connected to hub", 5000, fromAgent);
    assert.ok(back, "agent did not come back");
    // No backoff wait: reconnecting now means no 'reconnecting' delay was scheduled.
    const waits = t.agent.lines.slice(fromAgent).filter((l) => l.msg === "reconnecting");
    assert.equal(waits.length, 0, JSON.stringify(waits));
    const data = patternChunk(13, 10_000);
    assert.equal(Buffer.compare(await roundTrip(t.forward.echo!, data), data), 0);
  } finally {
    await t.stop();
    await echo.close();
  }
});

/** GET over http(s) from the test; returns status, body and the served certificate's subject CN. */
function get(url: string, ca?: string): Promise<{ status: number; body: string; cn?: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.get(url, ca ? { ca } : {}, (res) => {
      let body = "";
      const cn = (res.socket as tls.TLSSocket | null)?.getPeerCertificate?.()?.subject?.CN;
      res.on("data", (c: Uint8Array) => (body += new TextDecoder().decode(c)));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body, ...(cn ? { cn: String(cn) } : {}) });
      });
    });
    req.on("error", reject);
  });
}

Deno.test("health endpoints, a plain-HTTP hub with ws:// agents, and a hub serving the operator's certificate", async () => {
  const echo = await echoServer();
  try {
    // --plain-http: the agent dials ws:// and needs no CA.
    const plain = await tunnelWith({ echo }, { hubArgs: ["--plain-http"] });
    try {
      assert.match(plain.hub.url, /^ws:\/\//);
      assert.deepEqual(await get(`http://127.0.0.1:${plain.hub.port}/healthz`), {
        status: 200,
        body: "ok\n",
      });
      assert.deepEqual(await get(`http://127.0.0.1:${plain.hub.port}/readyz`), { status: 200, body: "ok\n" });
      const back = await roundTrip(plain.forward.echo!, patternChunk(3, 64 << 10));
      assert.equal(Buffer.compare(back, patternChunk(3, 64 << 10)), 0);
    } finally {
      await plain.stop();
    }

    // --tls-cert/--tls-key: the hub serves that certificate instead of one from its own CA.
    const dir = await scratchDir("own-cert");
    const cert = `${dir}/hub.crt`;
    const key = `${dir}/hub.key`;
    const made = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
      ]
        .concat(["-keyout", key, "-out", cert, "-subj", "/CN=hub.example.test"])
        .concat(["-addext", "subjectAltName=IP:127.0.0.1,DNS:hub.example.test"]),
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(made.success, new TextDecoder().decode(made.stderr));
    // Its agent trusts only this certificate (--ca-file) and carries traffic.
    const own = await tunnelWith({ echo }, { hubArgs: ["--tls-cert", cert, "--tls-key", key], caFile: cert });
    try {
      const pem = await Deno.readTextFile(cert);
      const health = await get(`https://127.0.0.1:${own.hub.port}/healthz`, pem);
      assert.deepEqual(health, { status: 200, body: "ok\n", cn: "hub.example.test" });
      const back = await roundTrip(own.forward.echo!, patternChunk(4, 64 << 10));
      assert.equal(Buffer.compare(back, patternChunk(4, 64 << 10)), 0);
    } finally {
      await own.stop();
      await Deno.remove(dir, { recursive: true });
    }
  } finally {
    await echo.close();
  }
});
