/**
 * What the agent serves on published endpoints. A TCP endpoint dials one fixed address given by the
 * operator (`--publish NAME=HOST:PORT`); the hub can only name the endpoint, never an address.
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { type Endpoint, splice } from "../tunnel/mod.ts";

/** Dials `host:port` with no-delay and half-close, within `timeoutMs`. */
export function dialPlain(host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * Dials `host:port` over TLS (no-delay) and resolves once the handshake is done, within `timeoutMs`.
 * Nothing may be written before that: Deno's TLS socket mishandles writes made during the handshake.
 */
export function dialTls(
  host: string,
  port: number,
  opts: { ca: string; servername?: string | undefined },
  timeoutMs = 10_000,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ca: opts.ca, servername: opts.servername });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS connect to ${host}:${port} timed out`));
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** An endpoint that relays each channel to a fixed TCP address. */
export function tcpEndpoint(host: string, port: number): Endpoint {
  return {
    open: async () => {
      const socket = await dialPlain(host, port);
      return (channel: Duplex) => splice(channel, socket);
    },
  };
}
