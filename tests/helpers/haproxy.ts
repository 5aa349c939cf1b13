/**
 * HAProxy (Debian's package) as the L4 load balancer in front of several hub replicas, the way an
 * operator would run it: TCP mode, least connections (agents hold long-lived tunnels), health checks on each hub's `/readyz`.
 * @module
 */

import net from "node:net";
import { join } from "node:path";
import { freePort } from "./net_servers.ts";
import { scratchDir } from "./tower_procs.ts";

/** A running HAProxy. */
export interface Haproxy {
  /** The port clients and agents connect to. */
  port: number;
  /** HAProxy's own log so far: one line per connection (TCP log format) and server state changes. */
  log(): string;
  stop(): Promise<void>;
}

/** Options of {@link startHaproxy}. */
export interface HaproxyOptions {
  /** Ports of the hub replicas (on 127.0.0.1). */
  backends: number[];
  /** Whether the hubs serve TLS (the health check then speaks TLS, without verifying). */
  tls: boolean;
  /**
   * Health check interval (default 500 ms; two failures in a row mark a replica down, one success up; a
   * check may take 2 s, so a replica busy on a loaded machine is not taken for a dead one).
   */
  checkMs?: number;
  /** Address to listen on (default 127.0.0.1). */
  bind?: string;
  /** Connections HAProxy holds at once (default 4000; each agent tunnel is one). */
  maxconn?: number;
}

/** Path of Debian's haproxy binary. */
export const haproxyBin = "/usr/sbin/haproxy";

/** Starts HAProxy in the foreground and waits until it accepts connections. */
export async function startHaproxy(opts: HaproxyOptions): Promise<Haproxy> {
  const port = await freePort();
  const dir = await scratchDir("haproxy");
  const config = join(dir, "haproxy.cfg");
  const check = opts.checkMs ?? 500;
  await Deno.writeTextFile(
    config,
    `global
  maxconn ${opts.maxconn ?? 4000}
  log stderr format raw local0
defaults
  mode tcp
  log global
  option tcplog
  timeout connect 2s
  timeout check 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  retries 3
  option redispatch 1
frontend hubs
  bind ${opts.bind ?? "127.0.0.1"}:${port}
  default_backend hubs
backend hubs
  balance leastconn
  option httpchk GET /readyz
  default-server check inter ${check}ms fastinter ${check}ms downinter ${check}ms fall 2 rise 1 ${
      opts.tls ? "check-ssl verify none" : ""
    }
${opts.backends.map((p, i) => `  server hub${i} 127.0.0.1:${p}`).join("\n")}
`,
  );
  const child = new Deno.Command(haproxyBin, {
    args: ["-db", "-f", config],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s.pipeThrough(new TextDecoderStream())) stderr += c;
  };
  const pump = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const exited = child.status;
  // Wait for the listening socket (bounded: 10 s).
  for (let i = 0;; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) break;
    const done = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(r, 50, false))]);
    if (done || i > 200) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await exited;
      await pump;
      throw new Error(`haproxy did not start:\n${stderr}`);
    }
  }
  return {
    port,
    log: () => stderr,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await exited;
      await pump;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
