/**
 * Collecting what a child process printed: one place for the stdin-then-output dance that kubectl, helm
 * and the CLI wrappers of the tests all do.
 * @module
 */

/** A finished command: its exit code and what it printed. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link commandOutput}. */
export interface CommandOutputOptions {
  /** Written to the child's stdin, which is then closed (the child must have been spawned with it piped). */
  stdin?: string | Uint8Array | undefined;
  /** Kill the child (SIGKILL) after this long; no limit when unset. */
  timeoutMs?: number | undefined;
}

/** Feeds `child` its stdin, waits for it to exit, and returns what it printed (stdout and stderr piped). */
export async function commandOutput(
  child: Deno.ChildProcess,
  opts: CommandOutputOptions = {},
): Promise<CommandOutput> {
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, opts.timeoutMs);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      const bytes = typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin;
      // A child that exits without reading its input still gets its output collected.
      await w.write(bytes).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `cmd` with `args` and returns what it printed. */
export function runCommand(
  cmd: string,
  args: string[],
  opts: CommandOutputOptions & { env?: Record<string, string> | undefined } = {},
): Promise<CommandOutput> {
  const child = new Deno.Command(cmd, {
    args,
    ...(opts.env ? { env: opts.env } : {}),
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return commandOutput(child, opts);
}
