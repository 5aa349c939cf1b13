/** EOF framing (the `forward` upgrade): frames of at most 64 KiB, payload passed on as it arrives. @module */

import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import {
  eofFramed,
  FrameTooLongError,
  maxEofFrameLength,
  windDownEvent,
} from "../../../lib/tunnel/eof_framing.ts";
import { patternChunk } from "../../helpers/net_servers.ts";

/** A fake socket: what is written to it is kept; `feed` delivers bytes as if they came from the peer. */
function wire(): { socket: Duplex; written: Uint8Array[]; feed(b: Uint8Array): void } {
  const written: Uint8Array[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Uint8Array, _enc, cb) {
      written.push(chunk);
      cb();
    },
  });
  return { socket, written, feed: (b) => void socket.push(b) };
}

function frameHeader(len: number): Uint8Array {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(len);
  return h;
}

Deno.test("eof framing: writes are cut into frames of at most 64 KiB and read back across any split", async () => {
  const out = wire();
  const framed = eofFramed(out.socket);
  const payload = patternChunk(7, 3 * maxEofFrameLength + 5);
  await new Promise<void>((r) => framed.write(payload, () => r()));
  const stream = Buffer.concat(out.written);
  const lengths: number[] = [];
  for (let at = 0; at < stream.length;) {
    const len = stream.readUInt32BE(at);
    lengths.push(len);
    at += 4 + len;
  }
  assert.deepEqual(lengths, [maxEofFrameLength, maxEofFrameLength, maxEofFrameLength, 5]);
  for (const step of [1, 3, 4, 5, 4099, stream.length]) {
    const back = wire();
    const reader = eofFramed(back.socket);
    const got: Uint8Array[] = [];
    reader.on("data", (c: Uint8Array) => got.push(c));
    const ended = new Promise<void>((r) => reader.once("end", () => r()));
    const all = Buffer.concat([stream, frameHeader(0)]);
    for (let at = 0; at < all.length; at += step) back.feed(all.subarray(at, at + step));
    await ended;
    assert.equal(Buffer.compare(Buffer.concat(got), payload), 0, `split every ${step} bytes`);
  }
  framed.destroy();
});

Deno.test("eof framing: payload flows before its frame is complete; a frame over 64 KiB is refused", async () => {
  // A frame of exactly the limit is fine, and its first bytes come out before the rest has arrived.
  const ok = wire();
  const reader = eofFramed(ok.socket);
  const first = new Promise<Uint8Array>((r) => reader.once("data", r));
  ok.feed(Buffer.concat([frameHeader(maxEofFrameLength), patternChunk(1, 1000)]));
  assert.equal((await first).length, 1000);
  reader.destroy();

  // One byte more is refused at the header, before any payload is taken.
  const bad = wire();
  const refused = eofFramed(bad.socket);
  const failed = new Promise<Error>((r) => refused.once("error", r));
  const data: Uint8Array[] = [];
  refused.on("data", (c: Uint8Array) => data.push(c));
  bad.feed(Buffer.concat([frameHeader(maxEofFrameLength + 1), patternChunk(2, 4096)]));
  const e = await failed;
  assert.ok(e instanceof FrameTooLongError, String(e));
  assert.equal(e.announced, maxEofFrameLength + 1);
  assert.equal(data.length, 0);
  assert.ok(bad.socket.destroyed);
});

Deno.test("eof framing: the wind-down notice lands between frames, is told apart from EOF and loss, data flows on", async () => {
  // Writer: the notice is a header alone (0xFFFFFFFF), after the frames already written, once, and never
  // after this side's EOF.
  const out = wire();
  const framed = eofFramed(out.socket);
  await new Promise<void>((r) => framed.write(patternChunk(3, 10), () => r()));
  framed.windDown();
  framed.windDown();
  await new Promise<void>((r) => framed.write(patternChunk(4, 5), () => r()));
  await new Promise<void>((r) => framed.end(() => r()));
  framed.windDown();
  const stream = Buffer.concat(out.written);
  const headers: number[] = [];
  for (let at = 0; at < stream.length;) {
    const len = stream.readUInt32BE(at);
    headers.push(len);
    at += 4 + (len === 0xffffffff ? 0 : len);
  }
  assert.deepEqual(headers, [10, 0xffffffff, 5, 0]);

  // Reader, across every split of the header: the event once, the data around it intact, then the end.
  for (const step of [1, 2, 3, 5, stream.length]) {
    const back = wire();
    const reader = eofFramed(back.socket);
    let notices = 0;
    const got: Uint8Array[] = [];
    let noticedAfter = -1;
    reader.on(windDownEvent, () => {
      notices++;
      noticedAfter = Buffer.concat(got).length;
    });
    reader.on("data", (c: Uint8Array) => got.push(c));
    const ended = new Promise<void>((r) => reader.once("end", () => r()));
    for (let at = 0; at < stream.length; at += step) back.feed(stream.subarray(at, at + step));
    await ended;
    assert.equal(notices, 1, `split every ${step}`);
    assert.equal(reader.windingDown, true);
    assert.ok(noticedAfter <= 10, `notice after ${noticedAfter} bytes`);
    assert.equal(
      Buffer.compare(Buffer.concat(got), Buffer.concat([patternChunk(3, 10), patternChunk(4, 5)])),
      0,
    );
  }

  // An EOF frame alone and a lost connection never look like a wind-down.
  for (const lose of ["eof", "loss"] as const) {
    const w = wire();
    const reader = eofFramed(w.socket);
    let notices = 0;
    reader.on(windDownEvent, () => notices++);
    reader.on("error", () => {});
    reader.resume();
    const gone = new Promise<void>((r) => reader.once("close", () => r()));
    if (lose === "eof") {
      w.feed(frameHeader(0));
      reader.end();
    } else w.socket.destroy();
    await gone;
    assert.equal(notices, 0, lose);
    assert.equal(reader.windingDown, false);
  }
  framed.destroy();
});
