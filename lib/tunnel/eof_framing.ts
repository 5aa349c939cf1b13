/**
 * A byte stream with half-close carried in-band, for transports that cannot half-close: in Deno, a TLS
 * socket whose peer ends its side is closed outright, so "I am done sending, keep talking to me" is lost.
 * Used by `main_server.ts forward` ↔ hub (upgrade token {@link eofFramedUpgrade}).
 *
 *     +----------------------+---------------------------+
 *     | length: uint32, BE   | data: `length` bytes      |     length 0 = end of this direction
 *     +----------------------+---------------------------+
 *
 * Data chunks are never empty, so a zero length is unambiguous. A frame is at most
 * {@link maxEofFrameLength} bytes; a longer announced length is a protocol error that closes the stream.
 * Payload is passed on as it arrives, never gathered into whole frames, so the only bytes held here are
 * at most one partial 4-byte header: what the peer sends waits in the socket (and in its TCP window) until
 * the consumer — an SSH channel under its window — takes it.
 * @module
 */

import { Duplex } from "node:stream";
import { Buffer } from "node:buffer";

/** Upgrade token for a framed TCP stream to a Service port. */
export const eofFramedUpgrade = "tower-tcp-framed.v1";

/**
 * Largest frame payload. 64 KiB is the largest read a Deno or Node socket hands over, so an honest writer
 * needs one frame per read; the reader never buffers a frame, so the bound is about refusing nonsense
 * lengths early rather than about memory.
 */
export const maxEofFrameLength = 64 * 1024;

/** Error for a frame header that announces more than {@link maxEofFrameLength}. */
export class FrameTooLongError extends Error {
  constructor(readonly announced: number) {
    super(`framed stream: frame of ${announced} bytes is longer than the ${maxEofFrameLength}-byte limit`);
  }
}

/**
 * Wraps `socket` (raw bytes on the wire) as a Duplex of payload bytes whose `end()` sends an EOF frame
 * and whose readable side ends on the peer's EOF frame. The socket is destroyed once both sides ended.
 */
export function eofFramed(socket: Duplex): Duplex {
  const header = Buffer.alloc(4);
  let headerFill = 0;
  /** Payload bytes still due in the current frame. */
  let remaining = 0;
  let readEnded = false;
  let writeEnded = false;
  const maybeDone = () => {
    if (readEnded && writeEnded) socket.end();
  };
  const framed: Duplex = new Duplex({
    read() {
      socket.resume();
    },
    writev(chunks: { chunk: Uint8Array }[], cb) {
      const out: Uint8Array[] = [];
      for (const { chunk } of chunks) {
        for (let at = 0; at < chunk.length; at += maxEofFrameLength) {
          const piece = chunk.subarray(at, Math.min(chunk.length, at + maxEofFrameLength));
          const head = Buffer.allocUnsafe(4);
          head.writeUInt32BE(piece.length, 0);
          out.push(head, piece);
        }
      }
      if (!out.length) return cb();
      for (let i = 0; i < out.length - 1; i++) socket.write(out[i]!);
      socket.write(out[out.length - 1]!, cb);
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
    let at = 0;
    while (at < chunk.length && !readEnded) {
      if (remaining > 0) {
        const n = Math.min(remaining, chunk.length - at);
        remaining -= n;
        // A view of the chunk as it came: no copy, no reassembly.
        if (!framed.push(chunk.subarray(at, at + n))) socket.pause();
        at += n;
        continue;
      }
      const n = Math.min(4 - headerFill, chunk.length - at);
      header.set(chunk.subarray(at, at + n), headerFill);
      headerFill += n;
      at += n;
      if (headerFill < 4) break;
      headerFill = 0;
      const len = header.readUInt32BE(0);
      if (len === 0) {
        readEnded = true;
        framed.push(null);
        maybeDone();
      } else if (len > maxEofFrameLength) {
        framed.destroy(new FrameTooLongError(len));
        return;
      } else {
        remaining = len;
      }
    }
  });
  socket.once("close", () => {
    if (!readEnded) framed.destroy(new Error("stream closed before its end"));
    else framed.destroy();
  });
  socket.on("error", (e: Error) => framed.destroy(e));
  return framed;
}
