/**
 * Closing an upgraded stream the way its protocol says, at a frame boundary: a WebSocket Close frame
 * (1001, going away; RFC 6455 §5.5.1) or a SPDY/3.1 GOAWAY, then the end of the connection. Used when a
 * draining hub ends exec, attach and port-forward streams, so a client sees its protocol's close rather
 * than a connection that stopped.
 *
 * Only the server-to-client direction is followed, and only its frame headers are read: payload passes
 * through as the chunks it came in, uncopied, counted down to the next header. The bytes held are at most
 * one partial header (14 bytes for WebSocket, 12 for SPDY).
 * @module
 */

import { Duplex } from "node:stream";
import { Buffer } from "node:buffer";

/** The framings an upgraded stream can be closed in. */
export type FramedProtocol = "websocket" | "spdy";

/** The framing of an upgraded stream, from the `Upgrade` header of its 101 answer (undefined: unknown). */
export function framedProtocol(upgrade: string | undefined): FramedProtocol | undefined {
  const token = (upgrade ?? "").trim().toLowerCase();
  if (token === "websocket") return "websocket";
  if (token === "spdy/3.1") return "spdy";
  return undefined;
}

/** Reason carried by the WebSocket Close frame (at most 123 bytes). */
const closeReason = "hub replica draining";

/** Longest payload length tracked exactly (2^53 - 1); a longer one loses the frame boundaries. */
const maxTrackedLength = Number.MAX_SAFE_INTEGER;

/** SPDY/3.1 control frame types whose payload starts with the stream id answered. */
const spdySynReply = 2;
const spdyRstStream = 3;
/** SPDY/3.1 GOAWAY control frame type. */
const spdyGoAway = 7;

/** Frame boundaries of one direction of a WebSocket or SPDY/3.1 stream, fed its bytes in order. */
export class FrameBoundaries {
  readonly #protocol: FramedProtocol;
  readonly #head = new Uint8Array(14);
  #fill = 0;
  /** Header bytes needed before the payload length is known. */
  #need: number;
  /** Payload bytes left in the current frame. */
  #remaining = 0;
  #lost = false;
  #closed = false;
  #lastReplied = 0;

  constructor(protocol: FramedProtocol) {
    this.#protocol = protocol;
    this.#need = protocol === "websocket" ? 2 : 8;
  }

  /** Whether every byte fed so far ended a frame. */
  get atBoundary(): boolean {
    return !this.#lost && this.#fill === 0 && this.#remaining === 0;
  }

  /** Whether a header announced a length too large to follow: no boundary is known from then on. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Whether the stream already carried its own close (a WebSocket Close frame, a SPDY GOAWAY). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Takes `chunk`'s bytes in order, up to the first frame boundary when `toBoundary` (0 when the bytes
   * before it ended a frame), else all of them; returns how many it took.
   */
  take(chunk: Uint8Array, toBoundary: boolean): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.#lost) return chunk.length;
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - at);
        this.#remaining -= n;
        at += n;
        continue;
      }
      if (toBoundary && this.#fill === 0) return at;
      const n = Math.min(this.#need - this.#fill, chunk.length - at);
      this.#head.set(chunk.subarray(at, at + n), this.#fill);
      this.#fill += n;
      at += n;
      if (this.#fill === this.#need) this.#headerDone();
    }
    return at;
  }

  /** The frame that closes the stream in its protocol, from the server's side. */
  closing(): Uint8Array {
    if (this.#protocol === "websocket") {
      const reason = Buffer.from(closeReason);
      const frame = Buffer.alloc(4 + reason.length);
      frame[0] = 0x88; // FIN, opcode 8 (Close); a server's frames are not masked
      frame[1] = 2 + reason.length;
      frame.writeUInt16BE(1001, 2); // going away
      reason.copy(frame, 4);
      return frame;
    }
    const frame = Buffer.alloc(16);
    frame.writeUInt16BE(0x8003, 0); // control, version 3
    frame.writeUInt16BE(spdyGoAway, 2);
    frame.writeUInt32BE(8, 4); // flags 0, length 8
    frame.writeUInt32BE(this.#lastReplied, 8); // last stream the server answered
    frame.writeUInt32BE(0, 12); // status OK
    return frame;
  }

  /** The header has `#need` bytes: either more are needed, or the frame's payload length is known. */
  #headerDone(): void {
    const h = Buffer.from(this.#head.buffer, this.#head.byteOffset, this.#fill);
    if (this.#protocol === "websocket") {
      const len7 = h[1]! & 0x7f;
      const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (h[1]! & 0x80 ? 4 : 0);
      if (this.#fill < need) return void (this.#need = need);
      let length = len7;
      if (len7 === 126) length = h.readUInt16BE(2);
      else if (len7 === 127) {
        const high = h.readUInt32BE(2);
        length = high * 2 ** 32 + h.readUInt32BE(6);
        if (high >= 2 ** 21 || length > maxTrackedLength) this.#lost = true;
      }
      if ((h[0]! & 0x0f) === 0x8) this.#closed = true;
      this.#frame(length, 2);
      return;
    }
    const control = (h[0]! & 0x80) !== 0;
    const type = h.readUInt16BE(2);
    const length = h.readUIntBE(5, 3);
    if (control && (type === spdySynReply || type === spdyRstStream) && length >= 4) {
      if (this.#fill < 12) return void (this.#need = 12);
      this.#lastReplied = Math.max(this.#lastReplied, h.readUInt32BE(8) & 0x7fffffff);
      this.#frame(length - 4, 8);
      return;
    }
    if (control && type === spdyGoAway) this.#closed = true;
    this.#frame(length, 8);
  }

  #frame(payload: number, nextNeed: number): void {
    this.#remaining = this.#lost ? 0 : payload;
    this.#fill = 0;
    this.#need = nextNeed;
  }
}

/**
 * The client's socket of an upgraded stream, as the splice's side of it: bytes pass both ways unchanged
 * while the server-to-client frames are followed; {@link ClosingSocket.windDown} then waits for the
 * frame in progress to end, writes the protocol's close, ends the connection and drops what the server
 * sends after that. The client's own close answer still reaches the server.
 */
export class ClosingSocket extends Duplex {
  readonly #socket: Duplex;
  readonly #frames: FrameBoundaries;
  #closing = false;
  #shut = false;
  #writing = false;

  constructor(socket: Duplex, protocol: FramedProtocol) {
    super({ allowHalfOpen: true });
    this.#socket = socket;
    this.#frames = new FrameBoundaries(protocol);
    socket.on("data", (chunk: Uint8Array) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.once("end", () => this.push(null));
    socket.on("error", (e: Error) => this.destroy(e));
    // Let an end already pushed reach the reader before this side closes too.
    socket.once("close", () => setImmediate(() => this.destroy()));
  }

  /** Closes at the next server-to-client frame boundary (at once when there is one now). */
  windDown(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#frames.lost || (!this.#writing && this.#frames.atBoundary)) this.#shutNow();
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Uint8Array, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.#shut) return cb(); // after the close, the server's bytes go nowhere
    const n = this.#frames.take(chunk, this.#closing);
    const piece = n === chunk.length ? chunk : chunk.subarray(0, n);
    const done = () => {
      this.#writing = false;
      if (this.#closing && !this.#shut && (this.#frames.atBoundary || this.#frames.lost)) this.#shutNow();
      cb();
    };
    if (!piece.length) return done();
    // As a pipe would: the next chunk once the socket takes more (a failing socket destroys this one).
    this.#writing = true;
    if (this.#socket.write(piece)) done();
    else this.#socket.once("drain", done);
  }

  override _final(cb: (e?: Error | null) => void): void {
    if (this.#shut) return cb();
    this.#shut = true;
    this.#socket.end(() => cb());
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    this.#socket.destroy();
    cb(e);
  }

  /** Writes the close (unless the server already sent its own, or the boundaries were lost), then ends. */
  #shutNow(): void {
    this.#shut = true;
    if (!this.#frames.closed && !this.#frames.lost) this.#socket.write(this.#frames.closing());
    this.#socket.end();
  }
}
