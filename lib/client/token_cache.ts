/**
 * The `login` plugin's token cache: one small JSON file per issuer and client ID in the user's config
 * dir (`$XDG_CONFIG_HOME/tower/oidc` or `~/.config/tower/oidc`), written 0600 in a 0700 dir and replaced
 * atomically, so that kubectl's repeated plugin runs reuse one login until the refresh token runs out.
 * @module
 */

import { join } from "node:path";
import { ConfigError } from "../config/mod.ts";

/** Largest cache file read back (a few tokens fit easily; anything larger is not ours). */
export const maxCacheBytes = 65_536;

/** What is kept between plugin runs. */
export interface CachedTokens {
  issuer: string;
  clientId: string;
  idToken: string;
  /** When the ID token expires (ms since the epoch). */
  expiresAt: number;
  refreshToken?: string;
}

/** The default cache dir from the environment, or a ConfigError saying what to set. */
export function defaultCacheDir(env: { get(name: string): string | undefined }): string {
  const xdg = env.get("XDG_CONFIG_HOME");
  if (xdg) return join(xdg, "tower", "oidc");
  const home = env.get("HOME");
  if (home) return join(home, ".config", "tower", "oidc");
  throw new ConfigError("no HOME or XDG_CONFIG_HOME: give login --cache-dir DIR");
}

async function fileName(issuer: string, clientId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${issuer}\n${clientId}`));
  return Array.from(new Uint8Array(digest).slice(0, 12), (b) => b.toString(16).padStart(2, "0")).join("") +
    ".json";
}

/** Reads the cached tokens for an issuer and client, or undefined when there are none usable. */
export async function readCache(
  dir: string,
  issuer: string,
  clientId: string,
): Promise<CachedTokens | undefined> {
  const path = join(dir, await fileName(issuer, clientId));
  let text: string;
  try {
    const st = await Deno.stat(path);
    if (st.size > maxCacheBytes) return undefined;
    text = await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
  try {
    const c = JSON.parse(text) as Partial<CachedTokens>;
    if (
      c.issuer !== issuer || c.clientId !== clientId || typeof c.idToken !== "string" ||
      typeof c.expiresAt !== "number" || (c.refreshToken !== undefined && typeof c.refreshToken !== "string")
    ) return undefined;
    return c as CachedTokens;
  } catch {
    return undefined;
  }
}

/** Stores tokens (0600, atomic replace). */
export async function writeCache(dir: string, tokens: CachedTokens): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, await fileName(tokens.issuer, tokens.clientId));
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(tokens), { mode: 0o600 });
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, path);
}

/** Forgets the tokens of an issuer and client (after a refused refresh). */
export async function dropCache(dir: string, issuer: string, clientId: string): Promise<void> {
  await Deno.remove(join(dir, await fileName(issuer, clientId))).catch(() => {});
}
