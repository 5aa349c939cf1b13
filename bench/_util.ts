/**
 * Small measuring helpers for the benchmarks: bulk copies over sockets, percentiles, process CPU and RSS.
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";

/** One row of a benchmark table, also written as JSON. */
export interface Row {
  scenario: string;
  case: string;
  [metric: string]: string | number | boolean | undefined;
}

const chunk = Buffer.alloc(1 << 20, 0x5a);

/** Writes `bytes` into `s` with backpressure, then ends it. */
export async function pump(s: net.Socket, bytes: number): Promise<void> {
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    const piece = bytes - sent >= chunk.length ? chunk : chunk.subarray(0, bytes - sent);
    // Wait on each write's callback rather than 'drain': Deno's TLS sockets do not always emit 'drain'.
    await new Promise<void>((resolve, reject) => s.write(piece, (e) => (e ? reject(e) : resolve())));
  }
  s.end();
}

/**
 * Reads `s` to its end (or its close: a TLS peer that ends closes the whole socket in Deno); resolves
 * with the byte count.
 */
export function drain(s: net.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    s.on("data", (c: Uint8Array) => void (n += c.length));
    s.once("end", () => resolve(n));
    s.once("close", () => resolve(n));
    s.once("error", reject);
  });
}

/** A loopback server that either swallows what it gets ("sink") or sends `bytes` and closes ("source"). */
export function bulkServer(
  mode: "sink" | "source",
  bytes = 0,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    if (mode === "sink") {
      s.on("data", () => {});
      s.on("end", () => s.end());
    } else {
      s.on("data", () => {});
      void pump(s, bytes);
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }))
  );
}

/** Connects to 127.0.0.1:port with no-delay. */
export function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => resolve(s));
    s.setNoDelay(true);
    s.once("error", reject);
  });
}

/** The p-th percentile (0..100) of sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** CPU seconds (user + system) used so far by process `pid`. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[11] = utime, fields[12] = stime, in clock ticks (100 per second on Linux)
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Resident memory of process `pid` in KiB. */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) : NaN;
}

/** MB/s (10^6 bytes per second). */
export function mbps(bytes: number, ms: number): number {
  return Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;
}

/** Rounds to `d` decimals. */
export function round(x: number, d = 2): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}
