/**
 * The hub's bounds per agent session (lib/tunnel/hub_ssh.ts, `AgentCaps`), driven in-process: the library's
 * SSH hub behind a real WebSocket listener, and a raw ssh2 client as an agent that stalls, floods or asks
 * for more than an agent does. At each cap the next open fails at once with an error naming the limit,
 * and the session keeps serving within it.
 * @module
 */

import assert from "node:assert/strict";
import http from "node:http";
import type net from "node:net";
import type { Duplex } from "node:stream";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import {
  acceptTunnel,
  AgentAtCapError,
  type AgentCaps,
  type AgentConnection,
  defaultAgentCaps,
  dialTunnel,
  fingerprintOfBlob,
  fingerprintOfKey,
  sshAlgorithms,
  SshHub,
  tunnelWebSocketServer,
} from "../../../lib/tunnel/mod.ts";
import { controlSubsystem } from "../../../lib/tunnel/control_stream.ts";
import { newHostKey } from "../../../lib/server/data_dir.ts";
import { ClusterSessions, NoAgentError } from "../../../lib/server/cluster_sessions.ts";
import { logger } from "../../../lib/log/log.ts";

/** Pending opens at the default; open channels and endpoints small, so the test stays quick. */
const caps: AgentCaps = { pendingOpens: defaultAgentCaps.pendingOpens, openChannels: 300, endpoints: 16 };

/** Resolves once `check` holds, re-checking on every turn of the event loop (bounded). */
async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 100_000 && !check(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(check(), what);
}

/** Logs `client` in as cluster "capped" over a tunnel's stream, pinning the hub's host key; settles once ready. */
function logIn(client: ssh2.Client, stream: Duplex, hostKey: string): Promise<void> {
  const ready = new Promise<void>((resolve, reject) => {
    client.once("ready", () => resolve());
    client.once("error", reject);
  });
  client.connect({
    sock: stream as unknown as import("node:stream").Readable,
    username: "capped",
    password: "t0ken",
    tryKeyboard: false,
    algorithms: sshAlgorithms(),
    hostVerifier: (key: Uint8Array) => fingerprintOfBlob(key) === fingerprintOfKey(hostKey),
    strictVendor: false,
  });
  return ready;
}

Deno.test("an agent session is bounded in pending opens, open channels, endpoints and sessions", async () => {
  const hostKey = newHostKey();
  let resolveAgent!: (a: AgentConnection) => void;
  const connected = new Promise<AgentConnection>((r) => (resolveAgent = r));
  const hub = new SshHub({
    hostKey,
    caps,
    authenticate: (cluster, token) => Promise.resolve(cluster === "capped" && token === "t0ken"),
    onAgent: (a) => resolveAgent(a),
    handshakeTimeoutMs: 10_000,
    keepaliveMs: 10_000,
    hello: () => ({ version: "test", replica: "caps-hub", replicas: 1 }),
    log: logger({ component: "caps-hub" }).with({ test: true }),
  });
  const wss = tunnelWebSocketServer();
  const front = http.createServer((_req, res) => res.writeHead(404).end());
  front.on("upgrade", (req, socket: Duplex, head: Uint8Array) => {
    void acceptTunnel(wss, req, socket, head).then((t) => hub.accept(t));
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as net.AddressInfo).port;

  // The "agent": stalls every open to `stall` until told, accepts every open to `echo`.
  const tunnel = await dialTunnel(new URL(`ws://127.0.0.1:${port}/tunnel`), {});
  const client = new ssh2.Client();
  const stalled: (() => void)[] = [];
  const accepted: Duplex[] = [];
  client.on("unix connection", (info, accept, reject) => {
    if (info.socketPath === "stall") stalled.push(reject);
    else {
      const ch = accept();
      ch.on("error", () => {});
      accepted.push(ch);
    }
  });
  const ready = logIn(client, tunnel.stream, hostKey);
  const publish = (name: string) =>
    new Promise<void>((resolve, reject) =>
      client.openssh_forwardInStreamLocal(name, (err) => (err ? reject(err) : resolve()))
    );
  const subsys = () =>
    new Promise<ssh2.ClientChannel>((resolve, reject) =>
      client.subsys(controlSubsystem, (err, ch) => (err ? reject(err) : resolve(ch)))
    );
  try {
    await ready;
    const agent = await connected;

    // Sessions: the control stream's session is served; a second one while it is open is refused.
    const control = await subsys();
    await assert.rejects(subsys(), /Channel open failure/);
    assert.ok(!control.destroyed, "the first session stays");

    // Endpoints: up to the cap; one more is refused; publishing a name again is no new entry.
    await publish("stall");
    await publish("echo");
    for (let i = 2; i < caps.endpoints; i++) await publish(`extra-${i}`);
    assert.equal(agent.endpoints.size, caps.endpoints);
    await assert.rejects(publish("one-too-many"));
    await publish("echo");
    assert.equal(agent.endpoints.size, caps.endpoints);
    assert.ok(!agent.endpoints.has("one-too-many"));

    // Pending opens: the agent answers none; at the cap the next open fails at once, naming the limit.
    const pending = Array.from({ length: caps.pendingOpens }, () => agent.openChannel("stall"));
    for (const p of pending) p.catch(() => {});
    await until("the agent saw every pending open", () => stalled.length === caps.pendingOpens);
    assert.equal(agent.pendingOpens, caps.pendingOpens);
    await assert.rejects(
      agent.openChannel("echo"),
      (e: Error) =>
        e instanceof AgentAtCapError && e.message.includes(`${caps.pendingOpens} channel opens unanswered`),
    );
    // Through ClusterSessions the refusal is a NoAgentError (503 to the user) carrying the same message.
    const sessions = new ClusterSessions();
    sessions.add(agent);
    await assert.rejects(
      sessions.openChannel("capped", "echo"),
      (e: Error) => e instanceof NoAgentError && e.message.includes("the limit per agent"),
    );
    // Once the agent answers (refuses them all), opens flow again.
    for (const r of stalled.splice(0)) r();
    const outcomes = await Promise.allSettled(pending);
    assert.ok(outcomes.every((o) => o.status === "rejected"));
    assert.equal(agent.pendingOpens, 0);
    assert.equal(agent.openChannels, 0);

    // Open channels: up to the cap, then the next open fails at once; closing one makes room.
    // (In batches: more than `pendingOpens` at once would meet that cap first.)
    const open: Duplex[] = [];
    while (open.length < caps.openChannels) {
      const batch = Math.min(100, caps.openChannels - open.length);
      open.push(...await Promise.all(Array.from({ length: batch }, () => agent.openChannel("echo"))));
    }
    assert.equal(agent.openChannels, caps.openChannels);
    await assert.rejects(
      agent.openChannel("echo"),
      (e: Error) => e instanceof AgentAtCapError && e.message.includes(`${caps.openChannels} channels open`),
    );
    const closed = new Promise((r) => open[0]!.once("close", r));
    // Resumed first: ssh2 reports a channel closed only once its readable side has ended.
    open[0]!.resume().destroy();
    accepted[0]!.resume().destroy();
    await closed;
    await until("a closed channel leaves the count", () => agent.openChannels === caps.openChannels - 1);
    const again = await agent.openChannel("echo");
    assert.equal(agent.openChannels, caps.openChannels);
    again.resume().destroy();
    for (const ch of open) ch.resume().destroy();
  } finally {
    client.end();
    tunnel.ws.terminate();
    front.closeAllConnections();
    await new Promise<void>((r) => front.close(() => r()));
  }
});

Deno.test("tunnels logging in are counted until they log in or close; at maxLogins the hub is at its cap", async () => {
  const hostKey = newHostKey();
  let agent: AgentConnection | undefined;
  const hub = new SshHub({
    hostKey,
    maxLogins: 2,
    authenticate: (cluster, token) => Promise.resolve(cluster === "capped" && token === "t0ken"),
    onAgent: (a) => void (agent = a),
    handshakeTimeoutMs: 10_000,
    keepaliveMs: 10_000,
    hello: () => ({ version: "test", replica: "logins-hub", replicas: 1 }),
    log: logger({ component: "logins-hub" }).with({ test: true }),
  });
  const wss = tunnelWebSocketServer();
  const front = http.createServer((_req, res) => res.writeHead(404).end());
  front.on("upgrade", (req, socket: Duplex, head: Uint8Array) => {
    void acceptTunnel(wss, req, socket, head).then((t) => hub.accept(t));
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const url = new URL(`ws://127.0.0.1:${(front.address() as net.AddressInfo).port}/tunnel`);
  const client = new ssh2.Client();
  try {
    // Two tunnels that never speak SSH: both count, and the hub is at its cap.
    const silent = [await dialTunnel(url, {}), await dialTunnel(url, {})];
    await until("two tunnels logging in", () => hub.loggingIn === 2);
    assert.ok(hub.atLoginCap());
    // One goes away: it no longer counts.
    silent[0]!.ws.terminate();
    await until("one tunnel logging in", () => hub.loggingIn === 1);
    assert.ok(!hub.atLoginCap());
    // One logs in: counted while it does, not once it is in.
    const tunnel = await dialTunnel(url, {});
    await logIn(client, tunnel.stream, hostKey);
    await until("the agent session is up", () => agent !== undefined);
    assert.equal(hub.loggingIn, 1, "a logged-in session is not counted");
    silent[1]!.ws.terminate();
    await until("no tunnel logging in", () => hub.loggingIn === 0);
  } finally {
    client.end();
    agent?.close("test over");
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((r) => front.close(() => r()));
  }
});
