/**
 * A hub that asks for more than the agent published — a compromised or buggy hub — gets nothing: the
 * agent refuses the channel, logs it, and never dials. The real hub already refuses such names before
 * asking (tests/e2e/services_test.ts); this test takes that check away by driving the library's SSH
 * hub in-process against a real agent process run with its permission set.
 * @module
 */

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import {
  acceptTunnel,
  type AgentConnection,
  fingerprintOfKey,
  SshHub,
  tunnelWebSocketServer,
} from "../../lib/tunnel/mod.ts";
import { newHostKey } from "../../lib/server/data_dir.ts";
import { logger } from "../../lib/log/log.ts";
import { startAgent } from "../helpers/tower_procs.ts";

Deno.test("an agent refuses channels to anything it did not publish, and dials nothing for them", async () => {
  // The one backend the agent publishes; every connection it ever gets is counted.
  let dialed = 0;
  // It answers once the request side has ended, so the answer crosses a half-closed channel. (It used to
  // greet at once, and the test's own end() closed the channel: it passed only when the greeting won.)
  const backend = net.createServer({ allowHalfOpen: true }, (s) => {
    dialed++;
    s.on("error", () => {});
    s.on("end", () => s.end("hello\n"));
    s.resume();
  });
  await new Promise<void>((r) => backend.listen(0, "127.0.0.1", r));
  const backendPort = (backend.address() as net.AddressInfo).port;

  const hostKey = newHostKey();
  let resolveAgent!: (a: AgentConnection) => void;
  const connected = new Promise<AgentConnection>((r) => (resolveAgent = r));
  const hub = new SshHub({
    hostKey,
    authenticate: (cluster, token) => Promise.resolve(cluster === "rogue" && token === "t0ken"),
    onAgent: (a) => resolveAgent(a),
    handshakeTimeoutMs: 10_000,
    keepaliveMs: 10_000,
    hello: () => ({ version: "test", replica: "rogue-hub", replicas: 1 }),
    log: logger({ component: "rogue-hub" }).with({ test: true }),
  });
  const wss = tunnelWebSocketServer();
  const front = http.createServer((_req, res) => res.writeHead(404).end());
  front.on("upgrade", (req, socket: Duplex, head: Uint8Array) => {
    void acceptTunnel(wss, req, socket, head).then((t) => hub.accept(t));
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as net.AddressInfo).port;

  const agent = startAgent({
    hubUrl: `ws://127.0.0.1:${port}/tunnel`,
    cluster: "rogue",
    token: "t0ken",
    fingerprint: fingerprintOfKey(hostKey),
    publish: [`web=127.0.0.1:${backendPort}`],
  });
  try {
    const session = await connected;
    // The agent says it is connected once the hub has accepted all it publishes.
    await agent.waitForMsg("connected to hub");
    assert.deepEqual([...session.endpoints], ["web"]);

    // Pretend the agent published more, as a hub that skips its own check would.
    const asked = ["svc/kube-system/secrets:443", "kubernetes", "lb/default/db:5432", "127.0.0.1:22"];
    for (const name of asked) session.endpoints.add(name);
    for (const name of asked) {
      await assert.rejects(session.openChannel(name), /refused a channel/, name);
    }
    await agent.waitForCount("channel refused", asked.length);
    assert.equal(agent.count("channel refused"), asked.length, agent.dump());
    assert.equal(dialed, 0, "nothing was dialed for a name the agent did not publish");

    // The published one still works, through the same session.
    const channel = await session.openChannel("web");
    const got = await new Promise<string>((resolve) => {
      let text = "";
      channel.on("data", (c: Uint8Array) => (text += new TextDecoder().decode(c)));
      channel.on("end", () => resolve(text));
      // Half-close, as the hub does (splice.ts): on the hub's (server) side ssh2's end() would close the
      // channel outright, and the answer could never come back.
      (channel as unknown as { eof(): void }).eof();
    });
    assert.equal(got, "hello\n");
    assert.equal(dialed, 1);
  } finally {
    await agent.stop();
    await new Promise<void>((r) => front.close(() => r()));
    front.closeAllConnections();
    await new Promise<void>((r) => backend.close(() => r()));
  }
});
