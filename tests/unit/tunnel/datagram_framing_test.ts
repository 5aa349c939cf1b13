/** Datagram framing: sizes at the 64 KiB bound survive any split; a longer frame is refused. @module */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { DatagramDecoder, encodeDatagram, maxDatagramBytes } from "../../../lib/tunnel/datagram_framing.ts";
import { patternChunk } from "../../helpers/net_servers.ts";

Deno.test("datagram framing: 0 B, 1 B and 64 KiB datagrams survive any split; a longer frame is refused", () => {
  const sizes = [0, 1, 512, maxDatagramBytes];
  const datagrams = sizes.map((n, i) => patternChunk(i + 1, n));
  const stream = Buffer.concat(datagrams.map((d) => encodeDatagram(d)));
  for (const step of [1, 3, 4, 4096, 65_539, stream.length]) {
    const decoder = new DatagramDecoder();
    const got: Uint8Array[] = [];
    for (let off = 0; off < stream.length; off += step) {
      got.push(...decoder.push(stream.subarray(off, off + step)));
    }
    assert.deepEqual(got.map((d) => d.length), sizes, `split every ${step} bytes`);
    got.forEach((d, i) => assert.equal(Buffer.compare(d, datagrams[i]!), 0));
  }
  assert.throws(() => encodeDatagram(new Uint8Array(maxDatagramBytes + 1)), RangeError);
  const tooLong = Buffer.alloc(4);
  tooLong.writeUInt32BE(maxDatagramBytes + 1);
  assert.throws(() => new DatagramDecoder().push(tooLong), /more than 65536/);
});
