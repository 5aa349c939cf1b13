/** Message boundaries of streamed answers (lib/proxy/message_framing.ts), by content type and split reads. */

import assert from "node:assert/strict";
import { messageFraming } from "../../../lib/proxy/message_framing.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** A protobuf watch frame: 4-byte big-endian length, then the payload. */
function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

Deno.test("message framing: chosen by the answer's media type, none for an encoded or unknown body", () => {
  const table: [string | undefined, string | undefined, boolean][] = [
    ["application/json", undefined, true],
    ["application/json;stream=watch", "", true],
    ["Application/JSON; charset=utf-8", "identity", true],
    ["text/plain", undefined, true],
    ["application/vnd.kubernetes.protobuf;stream=watch", undefined, true],
    ["application/json", "gzip", false],
    ["application/cbor-seq", undefined, false],
    ["application/yaml", undefined, false],
    [undefined, undefined, false],
  ];
  for (const [type, encoding, known] of table) {
    assert.equal(messageFraming(type, encoding) !== undefined, known, `${type} ${encoding}`);
  }
});

Deno.test("message framing: newline-ended messages stop at the first newline only when asked", () => {
  const f = messageFraming("application/json", undefined)!;
  assert.equal(f.atBoundary, true);
  assert.equal(f.take(bytes('{"a":1}\n{"b"'), false), 12);
  assert.equal(f.atBoundary, false);
  assert.equal(f.take(bytes(':2}\n{"c":3}\n'), true), 4);
  assert.equal(f.atBoundary, true);
  assert.equal(f.take(bytes('{"d":4}\n'), true), 0, "already at a boundary: nothing more");
});

Deno.test("message framing: protobuf frames split anywhere, lengths included, and newlines inside payloads", () => {
  const one = frame(bytes("a\nb")), two = frame(new Uint8Array(300).fill(0x0a)), three = frame(bytes(""));
  const all = new Uint8Array([...one, ...two, ...three]);
  // Every split point: the first part fed whole, the rest asked to stop at the next boundary.
  const ends = [one.length, one.length + two.length, all.length];
  for (let split = 0; split <= all.length; split++) {
    const f = messageFraming("application/vnd.kubernetes.protobuf;stream=watch", undefined)!;
    assert.equal(f.take(all.subarray(0, split), false), split);
    // Already at a boundary, it takes nothing more; else up to the end of the frame in progress.
    const expected = f.atBoundary ? split : ends.find((e) => e > split)!;
    const took = f.take(all.subarray(split), true);
    assert.equal(split + took, expected, `split ${split}`);
    assert.equal(f.atBoundary, true, `split ${split}`);
  }
});

Deno.test("message framing: a length at the 32-bit limit is followed without holding its payload", () => {
  const f = messageFraming("application/vnd.kubernetes.protobuf", undefined)!;
  assert.equal(f.take(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), false), 7);
  assert.equal(f.take(new Uint8Array(64 * 1024), true), 64 * 1024, "the frame goes on");
  assert.equal(f.atBoundary, false);
});
