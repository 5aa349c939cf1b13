/** A complete response written on a raw socket, for answering an upgrade request without proxying it. @module */

import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";

/** Writes a response on a raw socket and ends it (the connection closes after it). */
export function writeRawResponse(
  socket: Duplex,
  status: number,
  reason: string,
  body: string,
  type: string,
): void {
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: ${type}\r\ncontent-length: ${
      Buffer.byteLength(body)
    }\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}
