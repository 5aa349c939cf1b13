/**
 * Which "one sender" an address counts as, for per-sender limits (login throttling, UDP flows): an IPv4
 * address itself, and for IPv6 its /64, since a single host or site usually holds a whole /64 and could
 * otherwise take a fresh address for every attempt. IPv4-mapped IPv6 addresses count as their IPv4 one.
 * @module
 */

import net from "node:net";

/** The sender bucket of `address`: `a.b.c.d`, or `x:x:x:x::/64` for IPv6; other text is returned as is. */
export function addressBucket(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (net.isIPv4(address)) return address;
  const zoneless = address.split("%")[0]!;
  if (!net.isIPv6(zoneless)) return address;
  return `${expandIpv6(zoneless).slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as lower-case hex without leading zeros. */
function expandIpv6(address: string): string[] {
  let text = address.toLowerCase();
  // A trailing dotted quad (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups.
  const quad = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, quad.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") as [string, string] : [text, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16).toString(16));
}
