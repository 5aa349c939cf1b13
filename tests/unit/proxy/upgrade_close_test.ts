/**
 * Closing an upgraded stream at a frame boundary (lib/proxy/upgrade_close.ts): the frame tracker on
 * WebSocket and SPDY/3.1 headers split across reads, and the closing socket on a real TCP connection.
 */

import assert from "node:assert/strict";
import net from "node:net";
import { Buffer } from "node:buffer";
import { ClosingSocket, FrameBoundaries, framedProtocol } from "../../../lib/proxy/upgrade_close.ts";

/** A WebSocket frame header for `length` payload bytes, masked or not, with the shortest length form. */
function wsHeader(opcode: number, length: number, masked = false, form?: 7 | 16 | 64): Buffer {
  const use = form ?? (length < 126 ? 7 : length < 65536 ? 16 : 64);
  const mask = masked ? Buffer.from([1, 2, 3, 4]) : Buffer.alloc(0);
  const m = masked ? 0x80 : 0;
  if (use === 7) return Buffer.concat([Buffer.from([0x80 | opcode, m | length]), mask]);
  if (use === 16) {
    const h = Buffer.from([0x80 | opcode, m | 126, 0, 0]);
    h.writeUInt16BE(length, 2);
    return Buffer.concat([h, mask]);
  }
  const h = Buffer.alloc(10);
  h[0] = 0x80 | opcode;
  h[1] = m | 127;
  h.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
  h.writeUInt32BE(length % 2 ** 32, 6);
  return Buffer.concat([h, mask]);
}

/** A SPDY/3.1 data frame header, or a control frame header (with a stream id first when given). */
function spdyData(stream: number, length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(stream & 0x7fffffff, 0);
  h.writeUInt32BE(length, 4);
  return h;
}
function spdyControl(type: number, length: number, stream?: number): Buffer {
  const h = Buffer.alloc(stream === undefined ? 8 : 12);
  h.writeUInt16BE(0x8003, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt32BE(length, 4);
  if (stream !== undefined) h.writeUInt32BE(stream, 8);
  return h;
}

/** Feeds `stream` to a tracker `step` bytes at a time; returns the offsets where a frame ended. */
function boundaries(protocol: "websocket" | "spdy", stream: Buffer, step: number): number[] {
  const t = new FrameBoundaries(protocol);
  const seen = new Set<number>();
  for (let at = 0; at < stream.length; at += step) {
    const piece = stream.subarray(at, Math.min(stream.length, at + step));
    let off = 0;
    while (off < piece.length) {
      off += t.take(piece.subarray(off), true);
      if (off < piece.length) {
        // Stopped at a boundary: note it, then step into the next frame's header.
        if (at + off > 0) seen.add(at + off);
        off += t.take(piece.subarray(off, off + 1), false);
      }
    }
    if (t.atBoundary) seen.add(at + piece.length);
  }
  return [...seen];
}

Deno.test("upgrade close: the protocol comes from the 101's Upgrade header", () => {
  assert.equal(framedProtocol("websocket"), "websocket");
  assert.equal(framedProtocol("WebSocket"), "websocket");
  assert.equal(framedProtocol("SPDY/3.1"), "spdy");
  assert.equal(framedProtocol("tower-tcp-framed.v1"), undefined);
  assert.equal(framedProtocol(undefined), undefined);
});

Deno.test("upgrade close: WebSocket frame boundaries across every split, all length forms, masked or not", () => {
  const frames = [
    [wsHeader(2, 5), Buffer.alloc(5, 1)],
    [wsHeader(2, 0), Buffer.alloc(0)], // empty payload: the header alone is a frame
    [wsHeader(1, 125, true), Buffer.alloc(125, 2)],
    [wsHeader(2, 126), Buffer.alloc(126, 3)],
    [wsHeader(2, 300, true, 16), Buffer.alloc(300, 4)],
    [wsHeader(2, 70_000), Buffer.alloc(70_000, 5)],
    [wsHeader(2, 7, false, 64), Buffer.alloc(7, 6)], // a 64-bit length form for a short payload
    [wsHeader(9, 3, true), Buffer.alloc(3, 7)], // a ping between fragments
  ];
  const stream = Buffer.concat(frames.flat());
  const expected: number[] = [];
  let at = 0;
  for (const [h, p] of frames) expected.push(at += h!.length + p!.length);
  for (const step of [1, 2, 3, 7, 13, 1000, stream.length]) {
    assert.deepEqual(boundaries("websocket", stream, step), expected, `split every ${step}`);
  }
});

Deno.test("upgrade close: a 64-bit WebSocket length beyond 2^53 loses the boundaries; 2^53 - 1 does not", () => {
  const big = new FrameBoundaries("websocket");
  const h = Buffer.alloc(10);
  h[0] = 0x82;
  h[1] = 127;
  h.writeUInt32BE(2 ** 21, 2); // 2^53
  big.take(h, false);
  assert.equal(big.lost, true);
  assert.equal(big.atBoundary, false);
  assert.equal(big.take(Buffer.alloc(100), true), 100, "no boundary is ever claimed again");

  const max = new FrameBoundaries("websocket");
  h.writeUInt32BE(2 ** 21 - 1, 2);
  h.writeUInt32BE(0xffffffff, 6);
  max.take(h, false);
  assert.equal(max.lost, false);
  assert.equal(max.take(Buffer.alloc(100), true), 100);
  assert.equal(max.atBoundary, false, "inside a frame of 2^53 - 1 bytes");
});

Deno.test("upgrade close: SPDY/3.1 data and control frames; GOAWAY names the last stream answered", () => {
  const frames = [
    [spdyControl(2, 4 + 10, 1), Buffer.alloc(10, 1)], // SYN_REPLY stream 1
    [spdyData(1, 20), Buffer.alloc(20, 2)],
    [spdyControl(6, 4), Buffer.alloc(4, 3)], // PING
    [spdyControl(2, 4 + 3, 5), Buffer.alloc(3, 4)], // SYN_REPLY stream 5
    [spdyData(5, 0), Buffer.alloc(0)],
    [spdyControl(3, 8, 3), Buffer.alloc(4, 5)], // RST_STREAM stream 3
    [spdyData(1, 30), Buffer.alloc(30, 6)],
  ];
  const stream = Buffer.concat(frames.flat());
  const expected: number[] = [];
  let at = 0;
  for (const [h, p] of frames) expected.push(at += h!.length + p!.length);
  for (const step of [1, 5, 11, 4096, stream.length]) {
    assert.deepEqual(boundaries("spdy", stream, step), expected, `split every ${step}`);
  }
  // The largest 24-bit length, read in socket-sized pieces.
  const largest = Buffer.concat([
    spdyData(1, 0xffffff),
    Buffer.alloc(0xffffff),
    spdyData(1, 1),
    Buffer.alloc(1),
  ]);
  assert.deepEqual(boundaries("spdy", largest, 65536), [8 + 0xffffff, largest.length]);
  const t = new FrameBoundaries("spdy");
  t.take(stream, false);
  const goAway = Buffer.from(t.closing());
  assert.deepEqual([...goAway.subarray(0, 8)], [0x80, 3, 0, 7, 0, 0, 0, 8]);
  assert.equal(goAway.readUInt32BE(8), 5, "last good stream");
  assert.equal(goAway.readUInt32BE(12), 0, "status OK");
});

/** A connected pair of TCP sockets: the hub's side (wrapped) and the client's. */
async function pair(): Promise<{ hub: net.Socket; client: net.Socket; close(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
  // Half-open, as a Go client's connection is: it may still send its Close answer after the hub's FIN.
  const client = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: "127.0.0.1",
    allowHalfOpen: true,
  });
  await new Promise<void>((r) => client.once("connect", () => r()));
  const hub = await accepted;
  return {
    hub,
    client,
    close: async () => {
      hub.destroy();
      client.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Everything the client reads until the hub's side ends (FIN), and whether it was a clean end. */
function readAll(client: net.Socket): Promise<{ bytes: Buffer; fin: boolean }> {
  const got: Buffer[] = [];
  return new Promise((resolve) => {
    client.on("data", (c: Buffer) => got.push(c));
    client.once("end", () => resolve({ bytes: Buffer.concat(got), fin: true }));
    client.once("close", () => resolve({ bytes: Buffer.concat(got), fin: false }));
  });
}

/** Writes to `s` and waits until it was taken. */
const put = (s: ClosingSocket, b: Uint8Array) => new Promise<void>((r) => s.write(b, () => r()));

Deno.test("upgrade close: a WebSocket wound down mid-frame gets the rest of that frame, then Close 1001, then FIN", async () => {
  const p = await pair();
  try {
    const s = new ClosingSocket(p.hub, "websocket");
    const read = readAll(p.client);
    const first = Buffer.concat([wsHeader(2, 4), Buffer.from("abcd")]);
    const second = Buffer.concat([wsHeader(2, 6), Buffer.from("efghij")]);
    // The header of the second frame split, the wind-down after three of its payload bytes.
    await put(s, Buffer.concat([first, second.subarray(0, 1)]));
    await put(s, second.subarray(1, 5));
    s.windDown();
    await put(s, Buffer.concat([second.subarray(5), wsHeader(2, 3), Buffer.from("xyz")]));
    const { bytes, fin } = await read;
    assert.equal(fin, true);
    assert.equal(
      Buffer.compare(bytes.subarray(0, first.length + second.length), Buffer.concat([first, second])),
      0,
    );
    const close = bytes.subarray(first.length + second.length);
    assert.equal(close[0], 0x88, "a final Close frame, unmasked");
    assert.equal(close[1], close.length - 2);
    assert.equal(close.readUInt16BE(2), 1001);
    assert.equal(close.subarray(4).toString(), "hub replica draining");
    s.destroy();
  } finally {
    await p.close();
  }
});

Deno.test("upgrade close: at a boundary the close goes at once; the client's own Close still reaches the server", async () => {
  const p = await pair();
  try {
    const s = new ClosingSocket(p.hub, "websocket");
    const fromClient: Buffer[] = [];
    s.on("data", (c: Buffer) => fromClient.push(c));
    const read = readAll(p.client);
    await put(s, Buffer.concat([wsHeader(1, 2), Buffer.from("hi")]));
    s.windDown();
    const { bytes, fin } = await read;
    assert.equal(fin, true);
    assert.equal(bytes.subarray(4)[0], 0x88);
    // The client answers with its own (masked) Close, which passes to the server side.
    const answer = Buffer.concat([wsHeader(8, 2, true), Buffer.from([0x03, 0xe9])]);
    const ended = new Promise<void>((r) => s.once("end", () => r()));
    p.client.end(answer);
    await ended;
    assert.equal(Buffer.compare(Buffer.concat(fromClient), answer), 0);
    s.destroy();
  } finally {
    await p.close();
  }
});

Deno.test("upgrade close: a SPDY stream wound down mid-frame ends with GOAWAY after that frame", async () => {
  const p = await pair();
  try {
    const s = new ClosingSocket(p.hub, "spdy");
    const read = readAll(p.client);
    const reply = Buffer.concat([spdyControl(2, 4 + 2, 3), Buffer.from([0, 0])]);
    const data = Buffer.concat([spdyData(3, 10), Buffer.alloc(10, 9)]);
    await put(s, Buffer.concat([reply, data.subarray(0, 6)]));
    s.windDown();
    await put(s, Buffer.concat([data.subarray(6), spdyData(3, 2), Buffer.alloc(2)]));
    const { bytes, fin } = await read;
    assert.equal(fin, true);
    const head = reply.length + data.length;
    assert.equal(Buffer.compare(bytes.subarray(0, head), Buffer.concat([reply, data])), 0);
    const goAway = bytes.subarray(head);
    assert.equal(goAway.length, 16);
    assert.equal(goAway.readUInt16BE(2), 7);
    assert.equal(goAway.readUInt32BE(8), 3);
    s.destroy();
  } finally {
    await p.close();
  }
});
