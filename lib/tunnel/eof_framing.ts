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
 * {@link maxEofFrameLength} bytes; a longer announced length is a protocol error that closes the stream,
 * except 0xFFFFFFFF, a header alone: the wind-down notice ({@link EofFramed.windDown}). It says "I am
 * going away soon: finish at your next message boundary and close"; data keeps flowing both ways after
 * it, until the receiver closes or the sender's grace runs out. It is not an end: an EOF frame (the
 * agent's channel ended) or a lost connection (it died) never carries it, so a receiver can tell a relay
 * winding down from an upstream that went away.
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

/** Header value of the wind-down notice (above any data length). */
const windDownLength = 0xffffffff;

/**
 * Event a duplex emits when the other end asks it to wind down: end at the next message boundary, then
 * close. The framed stream emits it on the peer's notice; the hub emits it on a response or upgraded
 * socket at the end of a drain. Whoever relays a stream of messages listens; nobody listening means
 * the stream has no boundaries to wait for.
 */
export const windDownEvent = "windDown";

/** A framed stream: a Duplex of payload bytes with the in-band wind-down notice. */
export interface EofFramed extends Duplex {
  /** Sends the wind-down notice (once; nothing after this side's EOF frame). */
  windDown(): void;
  /** Whether the peer sent the wind-down notice. */
  readonly windingDown: boolean;
}

/**
 * Whether `duplex` is a framed stream whose peer already sent the wind-down notice (a relayed channel
 * may be asked before it is given to the request that uses it).
 */
export function askedToWindDown(duplex: Duplex): boolean {
  return (duplex as Partial<EofFramed>).windingDown === true;
}

/** Error for a frame header that announces more than {@link maxEofFrameLength}. */
export class FrameTooLongError extends Error {
  constructor(readonly announced: number) {
    super(`framed stream: frame of ${announced} bytes is longer than the ${maxEofFrameLength}-byte limit`);
  }
}

/**
 * Wraps `socket` (raw bytes on the wire) as a Duplex of payload bytes whose `end()` sends an EOF frame
 * and whose readable side ends on the peer's EOF frame. The socket is destroyed once both sides ended.
 * It emits {@link windDownEvent} once when the peer sends the wind-down notice.
 */
export function eofFramed(socket: Duplex): EofFramed {
  const header = Buffer.alloc(4);
  let headerFill = 0;
  /** Payload bytes still due in the current frame. */
  let remaining = 0;
  let readEnded = false;
  let writeEnded = false;
  let noticeSent = false;
  let windingDown = false;
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
      writeEnded = true;
      socket.write(Buffer.alloc(4), cb);
      maybeDone();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  const result = Object.defineProperty(
    Object.assign(framed, {
      windDown: () => {
        if (noticeSent || writeEnded || socket.destroyed) return;
        noticeSent = true;
        // Frames go to the socket whole and in one turn, so this lands between two of them.
        socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      },
    }),
    "windingDown",
    { get: () => windingDown },
  ) as EofFramed;
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
      } else if (len === windDownLength) {
        if (!windingDown) {
          windingDown = true;
          framed.emit(windDownEvent);
        }
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
  return result;
}
