/**
 * Real TCP servers the tunnel tests publish through agents: echo, hash-and-answer, and a server that
 * accepts and never reads (to stall one channel).
 * @module
 */

import net from "node:net";
import { createHash } from "node:crypto";

/** A listening test server. */
export interface TestServer {
  port: number;
  /** Sockets currently open on the server side. */
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

/** A server on a free 127.0.0.1 port that hands each connection (half-open allowed) to `handler`. */
export function listen(handler: (s: net.Socket) => void): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    handler(s);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        sockets,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }));
  });
}

/** Echoes every byte back and half-closes when the client does. */
export function echoServer(): Promise<TestServer> {
  return listen((s) => s.pipe(s));
}

/** Reads everything, then answers with the hex SHA-256 and the byte count, and closes. */
export function hashServer(): Promise<TestServer> {
  return listen((s) => {
    const h = createHash("sha256");
    let n = 0;
    s.on("data", (c: Uint8Array) => {
      h.update(c);
      n += c.length;
    });
    s.on("end", () => s.end(`${h.digest("hex")} ${n}\n`));
  });
}

/** Accepts connections and never reads from them. */
export function stallServer(): Promise<TestServer> {
  return listen((s) => s.pause());
}

/** Connects to 127.0.0.1:port. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

/** Deterministic pseudo-random bytes (xorshift), so senders need not keep what they sent. */
export function patternChunk(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed | 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

/** Sends `data` on a fresh connection, half-closes, and returns everything received until the server closes. */
export async function roundTrip(port: number, data: Uint8Array): Promise<Uint8Array> {
  const s = await connect(port);
  const parts: Uint8Array[] = [];
  const done = new Promise<void>((resolve, reject) => {
    s.on("data", (c: Uint8Array) => parts.push(c));
    s.once("end", () => resolve());
    s.once("error", reject);
  });
  s.end(data);
  await done;
  s.destroy();
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A TCP port that was free a moment ago (bind to 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
