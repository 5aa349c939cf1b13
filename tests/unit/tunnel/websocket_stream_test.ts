/**
 * The tunnel's WebSocket byte stream (lib/tunnel/websocket_stream.ts) over a real loopback WebSocket:
 * small writes made in one run of JavaScript leave as one message, a message is bounded, a large write
 * goes alone, and past the unsent bound writes report backpressure until the socket has taken the bytes.
 * @module
 */

import assert from "node:assert/strict";
import http from "node:http";
import type net from "node:net";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import {
  acceptTunnel,
  dialTunnel,
  type TunnelStream,
  tunnelWebSocketServer,
} from "../../../lib/tunnel/mod.ts";
import { maxCoalescedBytes, maxUnsentBytes } from "../../../lib/tunnel/websocket_stream.ts";

/** A hub-side listener and one dialed tunnel; `messages` records the size of every message the hub got. */
async function tunnelPair(): Promise<
  { agent: TunnelStream; hub: TunnelStream; messages: number[]; close(): Promise<void> }
> {
  const wss = tunnelWebSocketServer();
  const front = http.createServer((_req, res) => res.writeHead(404).end());
  let resolveHub!: (t: TunnelStream) => void;
  const accepted = new Promise<TunnelStream>((r) => (resolveHub = r));
  front.on("upgrade", (req, socket: Duplex, head: Uint8Array) => {
    void acceptTunnel(wss, req, socket, head).then(resolveHub);
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as net.AddressInfo).port;
  const agent = await dialTunnel(new URL(`ws://127.0.0.1:${port}/tunnel`), {});
  const hub = await accepted;
  const messages: number[] = [];
  hub.ws.on("message", (m: Buffer) => void messages.push(m.length));
  return {
    agent,
    hub,
    messages,
    close: async () => {
      const closed = new Promise((r) => hub.ws.once("close", r));
      agent.stream.destroy();
      hub.stream.destroy();
      await closed;
      wss.close();
      await new Promise((r) => front.close(r));
    },
  };
}

/** Reads `n` bytes from `s`. */
function readBytes(s: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= n) {
        s.off("data", onData);
        resolve(Buffer.concat(parts));
      }
    };
    s.on("data", onData);
    s.once("error", reject);
  });
}

Deno.test("writes made in one run of JavaScript leave as one WebSocket message", async () => {
  const t = await tunnelPair();
  try {
    // The shape ssh2 writes a chacha20-poly1305 packet in: length, body, MAC.
    const pieces = [Buffer.alloc(4, 1), Buffer.alloc(80, 2), Buffer.alloc(16, 3)];
    const got = readBytes(t.hub.stream, 100);
    for (const p of pieces) t.agent.stream.write(p);
    assert.deepEqual(await got, Buffer.concat(pieces));
    assert.deepEqual(t.messages, [100]);
  } finally {
    await t.close();
  }
});

Deno.test("small writes fill messages up to the bound; a large write is a message of its own", async () => {
  const t = await tunnelPair();
  try {
    const small = Array.from({ length: 100 }, (_, i) => Buffer.alloc(1000, i));
    const large = Buffer.alloc(maxCoalescedBytes + 1, 0xee);
    const expected = Buffer.concat([...small.slice(0, 50), large, ...small.slice(50)]);
    const got = readBytes(t.hub.stream, expected.length);
    for (const p of small.slice(0, 50)) t.agent.stream.write(p);
    t.agent.stream.write(large);
    for (const p of small.slice(50)) t.agent.stream.write(p);
    assert.ok((await got).equals(expected));
    const fit = Math.floor(maxCoalescedBytes / 1000) * 1000;
    // 50 small writes: full messages, then the rest; the large write alone; then the other 50 the same way.
    const half = [...Array(Math.floor(50_000 / fit)).fill(fit), 50_000 % fit].filter((n) => n > 0);
    assert.deepEqual(t.messages, [...half, large.length, ...half]);
  } finally {
    await t.close();
  }
});

Deno.test("past the unsent bound, writes report backpressure until the socket took the bytes", async () => {
  const t = await tunnelPair();
  try {
    const piece = 32 * 1024;
    const count = Math.ceil((maxUnsentBytes * 1.5) / piece);
    const expected = Buffer.alloc(count * piece);
    for (let i = 0; i < expected.length; i++) expected[i] = i % 251;
    const got = readBytes(t.hub.stream, expected.length);
    let firstRefused = -1;
    for (let i = 0; i < count; i++) {
      const ok = t.agent.stream.write(expected.subarray(i * piece, (i + 1) * piece));
      if (!ok && firstRefused < 0) firstRefused = i;
    }
    // Accepted at once up to the unsent bound, then buffered by the stream until the socket takes them.
    assert.ok(
      firstRefused > 0 && firstRefused * piece >= maxUnsentBytes - piece,
      `refused at ${firstRefused}`,
    );
    await new Promise((r) => t.agent.stream.once("drain", r));
    assert.ok((await got).equals(expected));
    assert.deepEqual(t.messages, Array(count).fill(piece));
  } finally {
    await t.close();
  }
});
