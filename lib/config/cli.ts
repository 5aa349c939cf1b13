/** Small helpers shared by both entrypoints' command lines. @module */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "./duration.ts";

/** `node:util` parseArgs with strict checking, turning its errors into ConfigErrors. */
export function parseFlags<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: values as Record<string, string | boolean | string[] | undefined>, positionals };
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/** Splits `HOST:PORT` (or `:PORT`, or `[v6]:PORT`) into parts. */
export function parseHostPort(
  text: string,
  what: string,
  defaultHost = "0.0.0.0",
): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new ConfigError(`${what} '${text}' is not HOST:PORT`);
  return { host: m[1] || m[2] || defaultHost, port };
}

/** Prints a configuration error the way both entrypoints do, and exits 2. */
export function exitWithConfigError(program: string, e: ConfigError): never {
  // deno-lint-ignore no-console
  console.error(`${program}: ${e.message}`);
  Deno.exit(2);
}
