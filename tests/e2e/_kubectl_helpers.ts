/**
 * Small helpers for driving real kubectl through the hub: incremental output of long-running commands,
 * the hub's audit lines, and which streaming protocol (WebSocket or SPDY) a verb took.
 * @module
 */

import assert from "node:assert/strict";
import type { HubProcess } from "../helpers/tower_procs.ts";
import { eventually } from "../helpers/wait.ts";

/** Text of a stream as it arrives, with waits on its content. */
export class StreamText {
  text = "";
  /** Resolves when the stream has ended. */
  readonly done: Promise<void>;
  #waiters = new Set<() => void>();

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const s of stream.pipeThrough(new TextDecoderStream())) {
        this.text += s;
        for (const w of this.#waiters) w();
      }
      for (const w of this.#waiters) w();
    })();
  }

  /** Waits until `pred(text)` holds; fails after `timeoutMs` showing what arrived. */
  waitFor(pred: (text: string) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred(this.text)) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs} ms; got:\n${this.text.slice(-2000)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Waits until the text contains `needle`. */
  waitForText(needle: string, timeoutMs = 20_000): Promise<void> {
    return this.waitFor((t) => t.includes(needle), `'${needle}'`, timeoutMs);
  }
}

/** A long-running child whose stdout and stderr are collected as they arrive. */
export interface Running {
  child: Deno.ChildProcess;
  out: StreamText;
  err: StreamText;
  /** Writes to stdin (only for children spawned with piped stdin). */
  write(text: string): Promise<void>;
  /** Closes stdin and waits for the child to exit by itself (SIGKILL after `timeoutMs`) and its pipes. */
  finish(timeoutMs?: number): Promise<Deno.CommandStatus>;
  /** Ends the child (SIGTERM, then SIGKILL after 5 s) and waits for it and its pipes. */
  stop(): Promise<Deno.CommandStatus>;
}

/** Wraps a spawned child with piped stdout/stderr. */
export function running(child: Deno.ChildProcess): Running {
  const out = new StreamText(child.stdout);
  const err = new StreamText(child.stderr);
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* already exited */ }
  };
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  const finish = async (timeoutMs = 20_000) => {
    await writer?.close().catch(() => {});
    const killer = setTimeout(() => signal("SIGKILL"), timeoutMs);
    const status = await child.status;
    clearTimeout(killer);
    await Promise.all([out.done, err.done]);
    return status;
  };
  return {
    child,
    out,
    err,
    write: async (text) => {
      writer ??= child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(text));
    },
    finish,
    stop: () => {
      signal("SIGTERM");
      return finish(5_000);
    },
  };
}

/** One audit line of the hub, as far as these tests read it. */
export interface AuditRecord {
  user?: string;
  groups?: string[];
  cluster: string;
  method: string;
  verb: string;
  path: string;
  status: number;
  upgraded?: boolean;
  bytesIn: number;
  bytesOut: number;
}

/** The hub's audit lines (its stdout), from line `from` on. */
export function auditSince(hub: HubProcess, from = 0): AuditRecord[] {
  return hub.stdout.slice(from).filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as AuditRecord);
}

/** A streaming transport kubectl can take for exec/attach/cp/port-forward. */
export interface StreamPath {
  name: "websocket" | "spdy";
  /** The HTTP method of the upgrade request: GET for WebSocket, POST for SPDY/3.1. */
  method: "GET" | "POST";
  /** kubectl environment that selects this path for exec, attach and cp. */
  remoteCommandEnv: Record<string, string>;
  /** kubectl environment that selects this path for port-forward. */
  portForwardEnv: Record<string, string>;
}

/** Both paths; WebSocket is kubectl's default and is set explicitly so an outer env cannot flip it. */
export const streamPaths: StreamPath[] = [
  {
    name: "websocket",
    method: "GET",
    remoteCommandEnv: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "true" },
    portForwardEnv: { KUBECTL_PORT_FORWARD_WEBSOCKETS: "true" },
  },
  {
    name: "spdy",
    method: "POST",
    remoteCommandEnv: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" },
    portForwardEnv: { KUBECTL_PORT_FORWARD_WEBSOCKETS: "false" },
  },
];

/**
 * Waits for the audit lines (from `from` on) of the upgraded streams to paths ending in `/subresource`
 * and checks that every attempt used `path`: one or more 101s with the path's method, and no request
 * with the other method (which would mean kubectl fell back, or never tried the path). Returns them.
 */
export async function assertStreamPath(
  hub: HubProcess,
  from: number,
  subresource: "exec" | "attach" | "portforward",
  path: StreamPath,
  minStreams = 1,
): Promise<AuditRecord[]> {
  const mine = () => auditSince(hub, from).filter((r) => r.path.endsWith(`/${subresource}`));
  // A stream's audit line is written when it ends, which may be just after kubectl exits.
  await eventually(10_000, () => {
    const n = mine().filter((r) => r.upgraded).length;
    assert.ok(n >= minStreams, `${n} of ${minStreams} upgraded ${subresource} audit lines so far`);
  });
  const lines = mine();
  for (const r of lines) {
    assert.equal(r.method, path.method, `${subresource} over ${path.name}: ${JSON.stringify(r)}`);
    assert.equal(r.status, 101, `${subresource} over ${path.name}: ${JSON.stringify(r)}`);
    assert.equal(r.upgraded, true, `${subresource} over ${path.name}: ${JSON.stringify(r)}`);
  }
  return lines;
}

/** Hex SHA-256 of `data`. */
export async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  for (let off = 0; off < n; off += 65_536) {
    crypto.getRandomValues(b.subarray(off, Math.min(n, off + 65_536)));
  }
  return b;
}

/** Quotes `s` for a POSIX shell command line. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
