/**
 * Small measuring helpers for the benchmarks: bulk copies over sockets, percentiles, process CPU and RSS.
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";
import { hashToken, newToken } from "../lib/registry/mod.ts";
import { FileRegistry } from "../lib/registry/mod.ts";
import { addCluster, type AddedCluster, repoRoot } from "../tests/helpers/tower_procs.ts";

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

/** A cluster name and its join token, as `bench/many_agents.ts` reads them. */
export interface AgentLogin {
  cluster: string;
  token: string;
}

/**
 * Registers clusters `PREFIX-0` … `PREFIX-(n-1)` in the file registry of `dataDir`: the first with
 * `cluster add` (which also creates the hub material and says its fingerprint and CA), the rest straight
 * into the registry file in one write (n admin commands would take minutes).
 */
export async function registerClusters(
  dataDir: string,
  prefix: string,
  n: number,
): Promise<{ first: AddedCluster; logins: AgentLogin[] }> {
  const first = await addCluster(dataDir, `${prefix}-0`);
  const more = Array.from(
    { length: n - 1 },
    (_, i) => ({ cluster: `${prefix}-${i + 1}`, token: newToken() }),
  );
  await new FileRegistry(`${dataDir}/registry.yaml`).update((data) => {
    const createdAt = new Date().toISOString();
    for (const a of more) data.clusters.push({ name: a.cluster, tokenHash: hashToken(a.token), createdAt });
  });
  return { first, logins: [{ cluster: first.name, token: first.token }, ...more] };
}

/** What {@link startManyAgents} needs. */
export interface ManyAgentsOptions {
  /**
   * Where the agents dial (a hub or load balancers in front of replicas); agent j of each process dials
   * `hubUrls[j % hubUrls.length]`.
   */
  hubUrls: string[];
  fingerprint: string;
  caFile: string;
  logins: AgentLogin[];
  /** Tunnels each agent keeps (`--hub-connections`). */
  hubConnections: number;
  /** Most agents in one process (each process is a `bench/many_agents.ts`). */
  perProcess: number;
  /** Where the spec files go. */
  dir: string;
}

/** Agents started by {@link startManyAgents}. */
export interface ManyAgents {
  /** The agent processes' ids. */
  pids: number[];
  /** Warnings and errors the agents logged so far, by message (and error, for failed dials). */
  problems(): Record<string, number>;
  /** Kills every agent process and waits for them. */
  stop(): Promise<void>;
}

/**
 * Runs `logins.length` idle agents, `perProcess` to a process (one process holds a few thousand
 * sessions before its event loop, not the hub, is what a benchmark measures).
 */
export async function startManyAgents(opts: ManyAgentsOptions): Promise<ManyAgents> {
  const children: Deno.ChildProcess[] = [];
  for (let i = 0; i * opts.perProcess < opts.logins.length; i++) {
    const spec = `${opts.dir}/agents-${i}.json`;
    await Deno.writeTextFile(
      spec,
      JSON.stringify({
        hubUrls: opts.hubUrls,
        fingerprint: opts.fingerprint,
        caFile: opts.caFile,
        hubConnections: opts.hubConnections,
        agents: opts.logins.slice(i * opts.perProcess, (i + 1) * opts.perProcess),
      }),
    );
    children.push(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "bench/many_agents.ts", spec],
        cwd: repoRoot,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn(),
    );
  }
  const problems: Record<string, number> = {};
  const pumps = children.map(async (c) => {
    let buf = "";
    for await (const chunk of c.stderr.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let key = line.slice(0, 60);
        try {
          const l = JSON.parse(line) as { msg?: string; error?: { message?: string } | string };
          const error = typeof l.error === "string" ? l.error : l.error?.message;
          key = `${l.msg}${error ? `: ${error.slice(0, 60)}` : ""}`;
        } catch { /* not JSON: counted by its start */ }
        problems[key] = (problems[key] ?? 0) + 1;
      }
    }
  });
  return {
    pids: children.map((c) => c.pid),
    problems: () => ({ ...problems }),
    stop: async () => {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await Promise.all(children.map((c) => c.status));
      await Promise.all(pumps);
    },
  };
}
