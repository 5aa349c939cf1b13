/**
 * The embedded registry backend: one YAML file in the hub's data dir, replaced atomically (write a temp
 * file, then rename), validated on every load with messages that name the bad field.
 * @module
 */

import YAML from "yaml";
import { ConfigError, isClusterName } from "../config/mod.ts";
import { emptyRegistry, type Registry, type RegistryData } from "./registry.ts";
import { isTokenHash } from "./join_token.ts";

/** Checks parsed YAML and returns it typed, or throws a ConfigError naming what is wrong and where. */
export function validateRegistry(raw: unknown, where: string): RegistryData {
  if (raw === null || raw === undefined) return emptyRegistry();
  const fail = (what: string): never => {
    throw new ConfigError(`${where}: ${what}`);
  };
  if (typeof raw !== "object" || Array.isArray(raw)) fail("top level must be a mapping");
  const doc = raw as Record<string, unknown>;
  if (doc.version !== undefined && doc.version !== 1) {
    fail(`unsupported version ${JSON.stringify(doc.version)}`);
  }
  const settings = (doc.settings ?? {}) as Record<string, unknown>;
  if (typeof settings !== "object" || Array.isArray(settings)) fail("settings must be a mapping");
  if (settings.publicUrl !== undefined) {
    if (typeof settings.publicUrl !== "string" || !/^wss?:\/\//.test(settings.publicUrl)) {
      fail("settings.publicUrl must be a ws:// or wss:// URL");
    }
  }
  const clusters = doc.clusters ?? [];
  if (!Array.isArray(clusters)) fail("clusters must be a list");
  const seen = new Set<string>();
  const out: RegistryData = {
    version: 1,
    settings: settings.publicUrl ? { publicUrl: settings.publicUrl as string } : {},
    clusters: [],
  };
  (clusters as unknown[]).forEach((c, i) => {
    const at = `clusters[${i}]`;
    if (!c || typeof c !== "object") fail(`${at} must be a mapping`);
    const rec = c as Record<string, unknown>;
    if (typeof rec.name !== "string" || !isClusterName(rec.name)) {
      fail(`${at}.name ${JSON.stringify(rec.name)} is not a DNS label`);
    }
    const name = rec.name as string;
    if (seen.has(name)) fail(`${at}.name '${name}' appears twice`);
    seen.add(name);
    if (typeof rec.tokenHash !== "string" || !isTokenHash(rec.tokenHash)) {
      fail(`${at}.tokenHash of '${name}' must be 'sha256:' and 64 hex digits`);
    }
    out.clusters.push({
      name,
      tokenHash: rec.tokenHash as string,
      createdAt: typeof rec.createdAt === "string" ? rec.createdAt : new Date(0).toISOString(),
      ...(typeof rec.tokenRotatedAt === "string" ? { tokenRotatedAt: rec.tokenRotatedAt } : {}),
    });
  });
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Registry stored in one YAML file. */
export class FileRegistry implements Registry {
  readonly path: string;
  readonly #lockPath: string;

  constructor(path: string) {
    this.path = path;
    this.#lockPath = path + ".lock";
  }

  async read(): Promise<RegistryData> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return emptyRegistry();
      throw e;
    }
    let raw: unknown;
    try {
      raw = YAML.parse(text);
    } catch (e) {
      throw new ConfigError(`${this.path}: not valid YAML: ${(e as Error).message}`);
    }
    return validateRegistry(raw, this.path);
  }

  async update<T>(change: (data: RegistryData) => T): Promise<T> {
    await this.#lock();
    try {
      const data = await this.read();
      const result = change(data);
      validateRegistry(data, "registry update");
      const tmp = `${this.path}.${crypto.randomUUID()}.tmp`;
      const header = "# Tower hub registry. Token hashes only; written by the hub and its admin commands.\n";
      await Deno.writeTextFile(tmp, header + YAML.stringify(data), { mode: 0o600 });
      await Deno.rename(tmp, this.path);
      return result;
    } finally {
      await Deno.remove(this.#lockPath).catch(() => {});
    }
  }

  watch(onChange: (data: RegistryData) => void, intervalMs = 500): () => void {
    let last = "";
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        const st = await Deno.stat(this.path).catch(() => undefined);
        const stamp = st ? `${st.mtime?.getTime()}:${st.size}:${st.ino}` : "absent";
        if (stamp !== last) {
          last = stamp;
          // Also on the first tick: a change between the caller's read and this watch must not be missed.
          onChange(await this.read());
        }
      } catch {
        // A file being replaced or briefly invalid: try again on the next tick.
        last = "";
      } finally {
        busy = false;
      }
    };
    void tick();
    const timer = setInterval(tick, intervalMs);
    return () => clearInterval(timer);
  }

  /** Takes the writer lock (a file created exclusively); breaks a lock left by a crashed writer after 10 s. */
  async #lock(): Promise<void> {
    for (let i = 0;; i++) {
      try {
        const f = await Deno.open(this.#lockPath, { createNew: true, write: true });
        f.close();
        return;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
        const st = await Deno.stat(this.#lockPath).catch(() => undefined);
        if (st?.mtime && Date.now() - st.mtime.getTime() > 10_000) {
          await Deno.remove(this.#lockPath).catch(() => {});
          continue;
        }
        if (i > 400) throw new Error(`registry ${this.path} is locked by another writer (${this.#lockPath})`);
        await sleep(25);
      }
    }
  }
}
