/**
 * Hop-by-hop header handling, in one place for the plain and the upgrade path: what crosses a hop,
 * what stays, and the exact response head a raw socket gets.
 * @module
 */

import type http from "node:http";

/**
 * Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1), plus proxy credentials.
 * `Expect` is answered on the hop it arrives on: the front door sends `100 Continue` itself, and the
 * next hop gets the body without having to ask for it.
 */
const hopByHop = new Set([
  "connection",
  "expect",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * The end-to-end headers of a message from its raw header list: hop-by-hop ones and those named in
 * `Connection` dropped, names lower-cased, repeated headers kept as arrays in order (e.g. every
 * `X-Stream-Protocol-Version`).
 */
export function endToEndHeaders(rawHeaders: readonly string[]): Record<string, string | string[]> {
  const named = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "connection") {
      for (const token of rawHeaders[i + 1]!.split(",")) named.add(token.trim().toLowerCase());
    }
  }
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (hopByHop.has(name) || named.has(name)) continue;
    const value = rawHeaders[i + 1]!;
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

/** The first value of header `name` (lower case) in a raw header list. */
export function rawHeaderValue(rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === name) return rawHeaders[i + 1];
  }
  return undefined;
}

/** True when the request asks for a protocol upgrade (`Connection: upgrade` and an `Upgrade` header). */
export function isUpgrade(req: Pick<http.IncomingMessage, "headers">): boolean {
  return req.headers.upgrade !== undefined &&
    (req.headers.connection ?? "").toLowerCase().split(",").some((t) => t.trim() === "upgrade");
}

/**
 * A response head as bytes for a raw socket. A `101` is relayed exactly as the upstream sent it (every
 * `Sec-WebSocket-*`, `X-Stream-Protocol-Version`, `Upgrade`); any other answer to an upgrade request
 * keeps only its end-to-end headers and closes the connection after its body.
 */
export function rawResponseHead(status: number, statusText: string, rawHeaders: readonly string[]): string {
  let head = `HTTP/1.1 ${status} ${statusText}\r\n`;
  if (status === 101) {
    for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
    return head + "\r\n";
  }
  const headers = endToEndHeaders(rawHeaders);
  delete headers["content-length"];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of Array.isArray(value) ? value : [value]) head += `${name}: ${one}\r\n`;
  }
  return head + "connection: close\r\n\r\n";
}

/** Header values as undici takes them: strings or string arrays, nothing undefined. */
export function headerRecord(headers: http.OutgoingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value : String(value);
  }
  return out;
}
