/**
 * UDP over SSH channels. A channel is a byte stream, so each datagram travels as one frame:
 *
 *     +----------------------+---------------------------+
 *     | length: uint32, BE   | payload: `length` bytes    |
 *     +----------------------+---------------------------+
 *
 * `length` is the datagram's size (0 allowed), at most {@link maxDatagramBytes}. Frames follow each other
 * with no padding. A larger length is a protocol error and ends the channel. The channel's window keeps
 * the usual flow control; a datagram is never split across frames and never merged with another.
 * @module
 */

import { Buffer } from "node:buffer";

/** Largest datagram carried (64 KiB, above the 65,507-byte IPv4 UDP payload limit). */
export const maxDatagramBytes = 65_536;

/** One datagram as a frame. */
export function encodeDatagram(payload: Uint8Array): Uint8Array {
  if (payload.length > maxDatagramBytes) {
    throw new RangeError(`datagram of ${payload.length} bytes exceeds ${maxDatagramBytes}`);
  }
  const frame = Buffer.allocUnsafe(4 + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.set(payload, 4);
  return frame;
}

/** Reassembles datagrams from arbitrary chunks of a frame stream. */
export class DatagramDecoder {
  #buffered: Buffer = Buffer.alloc(0);

  /** Feeds a chunk; returns the datagrams it completes. Throws on a frame longer than allowed. */
  push(chunk: Uint8Array): Uint8Array[] {
    this.#buffered = this.#buffered.length ? Buffer.concat([this.#buffered, chunk]) : Buffer.from(chunk);
    const out: Uint8Array[] = [];
    let off = 0;
    while (this.#buffered.length - off >= 4) {
      const len = this.#buffered.readUInt32BE(off);
      if (len > maxDatagramBytes) {
        throw new RangeError(`frame announces ${len} bytes, more than ${maxDatagramBytes}`);
      }
      if (this.#buffered.length - off - 4 < len) break;
      out.push(this.#buffered.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    this.#buffered = this.#buffered.subarray(off);
    return out;
  }
}
