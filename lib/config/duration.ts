/** Parsing of human durations such as `10s`, `500ms`, `2m`. @module */

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `10s`, `2m`, `1h`, `7d` (or a bare number of seconds) into milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new ConfigError(`${what}: '${text}' is not a duration (examples: 500ms, 10s, 2m)`);
  const ms = Number(m[1]) * units[m[2] ?? "s"]!;
  if (!(ms > 0)) throw new ConfigError(`${what}: must be greater than zero, got '${text}'`);
  return ms;
}

/** A configuration mistake a person can act on; entrypoints print its message and exit 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
