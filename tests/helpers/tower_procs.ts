/**
 * Test helpers that run Tower's two entrypoints as real processes with their permission sets, the way
 * an operator would, and read their JSON log lines.
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repo root. */
export const repoRoot: string = fileURLToPath(new URL("../../", import.meta.url));

/** A fresh data dir under /tmp/tower (the only scratch place the permission sets allow). */
export async function scratchDir(prefix: string): Promise<string> {
  await Deno.mkdir("/tmp/tower", { recursive: true });
  return await Deno.makeTempDir({ dir: "/tmp/tower", prefix: `${prefix}-` });
}

/** Runs `fn` with a fresh scratch dir (see {@link scratchDir}) and removes the dir afterwards. */
export async function withScratchDir(prefix: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await scratchDir(prefix);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A JSON log line. */
export type LogLine = Record<string, unknown> & { msg: string };

/** A spawned entrypoint whose stderr log lines are collected. */
export class TowerProcess {
  readonly child: Deno.ChildProcess;
  readonly lines: LogLine[] = [];
  readonly stdout: string[] = [];
  readonly name: string;
  #waiters = new Set<() => void>();
  readonly exited: Promise<Deno.CommandStatus>;
  #pumps: Promise<void>[];

  /** `wrap` prefixes the command, e.g. `["ip", "netns", "exec", NS]` to run inside a network namespace. */
  constructor(name: string, args: string[], env: Record<string, string> = {}, wrap: string[] = []) {
    this.name = name;
    const argv = [...wrap, Deno.execPath(), ...args];
    this.child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      cwd: repoRoot,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.exited = this.child.status;
    this.#pumps = [
      this.#pump(this.child.stderr, (line) => {
        // deno-lint-ignore no-console
        if (Deno.env.get("TOWER_TEST_VERBOSE")) console.error(`[${this.name}] ${line}`);
        if (!line.startsWith("{")) {
          this.lines.push({ msg: "(text)", text: line });
          return;
        }
        try {
          this.lines.push(JSON.parse(line));
        } catch {
          this.lines.push({ msg: "(text)", text: line });
        }
      }),
      this.#pump(this.child.stdout, (line) => void this.stdout.push(line)),
    ];
  }

  async #pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        for (const w of this.#waiters) w();
      }
    }
    if (buf) onLine(buf);
    for (const w of this.#waiters) w();
  }

  /** Waits for a log line matching `pred` (seen from line `from` on). */
  waitFor(pred: (l: LogLine) => boolean, what: string, timeoutMs = 20_000, from = 0): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.slice(from).find(pred);
        if (hit) {
          cleanup();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: no '${what}' within ${timeoutMs} ms; log:\n${this.dump()}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Waits for a line with `msg` (from line `from` on). */
  waitForMsg(msg: string, timeoutMs = 20_000, from = 0): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, msg, timeoutMs, from);
  }

  /** Waits until `n` lines with `msg` have been logged. */
  async waitForCount(msg: string, n: number, timeoutMs = 20_000): Promise<void> {
    await this.waitFor((l) => l.msg === msg && this.count(msg) >= n, `${n} '${msg}' lines`, timeoutMs);
  }

  /** Lines with `msg`. */
  count(msg: string): number {
    return this.lines.filter((l) => l.msg === msg).length;
  }

  /** All log lines, for failure messages. */
  dump(): string {
    return this.lines.map((l) => JSON.stringify(l)).join("\n");
  }

  /** Sends a signal (ignoring a process that is already gone). */
  signal(sig: Deno.Signal): void {
    try {
      this.child.kill(sig);
    } catch {
      // already exited
    }
  }

  /** Stops the process and waits for it and its pipes. */
  async stop(sig: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.signal(sig);
    const killer = setTimeout(() => this.signal("SIGKILL"), 5000);
    const status = await this.exited;
    clearTimeout(killer);
    await Promise.all(this.#pumps);
    return status;
  }
}

/** Runs `main_server.ts` once (admin commands) and returns its output. */
export async function serverCommand(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-P=server", "--no-prompt", "main_server.ts", ...args],
    cwd: repoRoot,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** What `cluster add` printed, parsed. */
export interface AddedCluster {
  name: string;
  token: string;
  fingerprint: string;
  caFile: string;
  output: string;
}

/** Adds a cluster with the admin command and returns its token and the hub facts it printed. */
export async function addCluster(dataDir: string, name: string, hubUrl?: string): Promise<AddedCluster> {
  const args = ["cluster", "add", name, "--data-dir", dataDir, ...(hubUrl ? ["--hub-url", hubUrl] : [])];
  const r = await serverCommand(args);
  if (r.code !== 0) throw new Error(`cluster add ${name} failed: ${r.stderr}`);
  return { name, ...parseIssued(r.stdout), output: r.stdout };
}

/** Extracts token, fingerprint and CA path from `cluster add` / `rotate-token` output. */
export function parseIssued(stdout: string): { token: string; fingerprint: string; caFile: string } {
  const token = /^\s+(tower_[A-Za-z0-9_-]{43})$/m.exec(stdout)?.[1];
  const fingerprint = /fingerprint: (SHA256:\S+)/.exec(stdout)?.[1];
  const caFile = /CA: (\S+)/.exec(stdout)?.[1];
  if (!token || !fingerprint || !caFile) throw new Error(`unexpected cluster add output:\n${stdout}`);
  return { token, fingerprint, caFile };
}

/** Options for {@link startHub}. */
export interface HubProcessOptions {
  dataDir: string;
  /** Extra `serve` flags. */
  args?: string[];
  /** Fixed port (default: any free one). */
  port?: number;
  plain?: boolean;
  /** Extra environment (e.g. the in-cluster KUBERNETES_SERVICE_* of a hub run as a pod would run). */
  env?: Record<string, string>;
  /** How long to wait for it to listen (default 20 s). */
  startTimeoutMs?: number;
}

/** A hub process with its bound port. */
export interface HubProcess extends TowerProcess {
  port: number;
  url: string;
  dataDir: string;
}

/** The V8 flags `deno task server` runs the hub with (deno.json), so tests run it as shipped. */
const hubV8Flags = /--v8-flags=(\S+)/.exec(
  JSON.parse(Deno.readTextFileSync(join(repoRoot, "deno.json"))).tasks.server,
)?.[1];

/**
 * `--cpu-prof` flags when `TOWER_PROFILE_DIR` is set (for profiling hub and agent under a benchmark;
 * see BENCHMARKS.md; each process writes its `.cpuprofile` there when it exits), and V8 flags from
 * `TOWER_V8_FLAGS` (for trying heap settings; the hub's default is {@link hubV8Flags}).
 */
function runtimeFlags(who: string): string[] {
  const dir = Deno.env.get("TOWER_PROFILE_DIR");
  const v8 = Deno.env.get("TOWER_V8_FLAGS") ?? (who === "hub" ? hubV8Flags : undefined);
  return [
    ...(dir
      ? ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${who}-${Date.now()}.cpuprofile`]
      : []),
    ...(v8 ? [`--v8-flags=${v8}`] : []),
  ];
}

/** Starts `main_server.ts serve` and waits until it listens. */
export async function startHub(opts: HubProcessOptions): Promise<HubProcess> {
  const p = new TowerProcess("hub", [
    "run",
    "-P=server",
    "--no-prompt",
    ...runtimeFlags("hub"),
    "main_server.ts",
    "serve",
    "--data-dir",
    opts.dataDir,
    "--listen",
    `127.0.0.1:${opts.port ?? 0}`,
    ...(opts.plain ? ["--plain-http"] : []),
    ...(opts.args ?? []),
  ], opts.env);
  const line = await p.waitForMsg("hub listening", opts.startTimeoutMs);
  const port = Number(String(line.listen).split(":").pop());
  return Object.assign(p, {
    port,
    url: `${opts.plain ? "ws" : "wss"}://127.0.0.1:${port}/tunnel`,
    dataDir: opts.dataDir,
  });
}

/**
 * Starts a second hub replica on `dataDir` (a peer link on a free port) beside one already running there,
 * and waits until it sees both replicas' leases.
 */
export async function startSecondReplica(dataDir: string): Promise<HubProcess> {
  const hub = await startHub({ dataDir, args: ["--peer-listen", "127.0.0.1:0"] });
  try {
    await hub.waitFor(
      (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 2,
      "2 replicas",
      40_000,
    );
  } catch (e) {
    await hub.stop();
    throw e;
  }
  return hub;
}

/** The replica id a hub says it runs as. */
export function replicaOf(hub: HubProcess): string {
  return String(hub.lines.find((l) => l.msg === "hub listening")?.replica);
}

/** A hub's audit lines so far (it writes them to stdout). */
export function auditOf(hub: HubProcess): Record<string, unknown>[] {
  return hub.stdout.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((l) =>
    "cluster" in l && "status" in l
  );
}

/** Options for {@link startAgent}. */
export interface AgentProcessOptions {
  hubUrl: string;
  cluster: string;
  token: string;
  fingerprint: string;
  caFile?: string;
  publish?: string[];
  args?: string[];
  env?: Record<string, string>;
  name?: string;
  /** Command prefix, e.g. `["ip", "netns", "exec", NS]`. */
  wrap?: string[];
}

/** Starts `main_agent.ts` (does not wait for it to connect). */
export function startAgent(opts: AgentProcessOptions): TowerProcess {
  return new TowerProcess(
    opts.name ?? `agent-${opts.cluster}`,
    [
      "run",
      "-P=agent",
      "--no-prompt",
      ...runtimeFlags("agent"),
      "main_agent.ts",
      "--hub",
      opts.hubUrl,
      "--cluster",
      opts.cluster,
      "--hub-fingerprint",
      opts.fingerprint,
      ...(opts.caFile ? ["--ca-file", opts.caFile] : []),
      ...(opts.publish ?? []).flatMap((p) => ["--publish", p]),
      ...(opts.args ?? []),
    ],
    { TOWER_TOKEN: opts.token, ...opts.env },
    opts.wrap,
  );
}

/** Path of a file inside a data dir. */
export function inDataDir(dataDir: string, file: string): string {
  return join(dataDir, file);
}
