/**
 * Structured logging: one JSON object per line on stderr, with a stable `msg` and flat fields.
 * Callers never pass secrets (tokens, keys): nothing here filters them out.
 * @module
 */

/** Severity of a log line. */
export type Level = "debug" | "info" | "warn" | "error";

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold: Level = "info";
let sink: (line: string) => void = (line) => {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
  } catch {
    // stderr closed: nothing sensible left to do with a log line
  }
};

/** Sets the lowest level that is written. */
export function setLogLevel(level: Level): void {
  threshold = level;
}

/** Redirects log lines (tests capture them this way). */
export function setLogSink(write: (line: string) => void): void {
  sink = write;
}

/** A logger that adds fixed fields (e.g. the cluster) to every line it writes. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  with(fields: Record<string, unknown>): Logger;
}

function errorFields(value: unknown): unknown {
  if (value instanceof Error) return value.message;
  return value;
}

/** Creates a logger whose lines carry `base` fields. */
export function logger(base: Record<string, unknown> = {}): Logger {
  const write = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < order[threshold]) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) line[k] = errorFields(v);
    sink(JSON.stringify(line));
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    with: (f) => logger({ ...base, ...f }),
  };
}
