/** Small helpers shared by both entrypoints' command lines. @module */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "./duration.ts";

/** Flag definitions, as `node:util` parseArgs takes them. */
export type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/** The values parseArgs gives for `T`, typed flag by flag. */
export type FlagValues<T extends FlagOptions> = ReturnType<
  typeof parseArgs<{ args: string[]; options: T; allowPositionals: true; strict: true }>
>["values"];

/** `node:util` parseArgs with strict checking, turning its errors into ConfigErrors. */
export function parseFlags<T extends FlagOptions>(
  args: string[],
  options: T,
): { values: FlagValues<T>; positionals: string[] } {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/** The text of a file named by a flag, or a ConfigError that says which flag and why. */
export async function readFlagFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`${flag} ${path}: ${(e as Error).message}`);
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
