/**
 * A byte stream with half-close carried in-band, for transports that cannot half-close: in Deno, a TLS
 * socket whose peer ends its side is closed outright, so "I am done sending, keep talking to me" is lost.
 * Used by `main_server.ts forward` ↔ hub (upgrade token {@link eofFramedUpgrade}).
 *
 *     +----------------------+---------------------------+
 *     | length: uint32, BE   | data: `length` bytes      |     length 0 = end of this direction
 *     +----------------------+---------------------------+
 *
 * Data chunks are never empty, so a zero length is unambiguous.
 * @module
 */

import { Duplex } from "node:stream";
import { Buffer } from "node:buffer";

/** Upgrade token for a framed TCP stream to a Service port. */
export const eofFramedUpgrade = "tower-tcp-framed.v1";

/**
 * Wraps `socket` (raw bytes on the wire) as a Duplex of payload bytes whose `end()` sends an EOF frame
 * and whose readable side ends on the peer's EOF frame. The socket is destroyed once both sides ended.
 */
export function eofFramed(socket: Duplex): Duplex {
  let buffered: Buffer = Buffer.alloc(0);
  let readEnded = false;
  let writeEnded = false;
  const maybeDone = () => {
    if (readEnded && writeEnded) socket.end();
  };
  const framed: Duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Uint8Array, _enc, cb) {
      if (!chunk.length) return cb();
      const head = Buffer.allocUnsafe(4);
      head.writeUInt32BE(chunk.length, 0);
      socket.write(head);
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.write(Buffer.alloc(4), cb);
      writeEnded = true;
      maybeDone();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  socket.on("data", (chunk: Uint8Array) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : Buffer.from(chunk);
    while (buffered.length >= 4 && !readEnded) {
      const len = buffered.readUInt32BE(0);
      if (len === 0) {
        buffered = buffered.subarray(4);
        readEnded = true;
        framed.push(null);
        maybeDone();
        break;
      }
      if (buffered.length < 4 + len) break;
      const more = framed.push(buffered.subarray(4, 4 + len));
      buffered = buffered.subarray(4 + len);
      if (!more) socket.pause();
    }
  });
  socket.once("close", () => {
    if (!readEnded) framed.destroy(new Error("stream closed before its end"));
    else framed.destroy();
  });
  socket.on("error", (e: Error) => framed.destroy(e));
  return framed;
}
