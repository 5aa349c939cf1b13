/**
 * The embedded registry backend: one YAML file in the hub's data dir, replaced atomically (write a temp
 * file, then rename), validated on every load with messages that name the bad field.
 * @module
 */

import YAML from "yaml";
import { ConfigError, isClusterName, parseDuration } from "../config/mod.ts";
import {
  type AccessRule,
  emptyRegistry,
  type LoadBalancerPort,
  type Registry,
  type RegistryData,
  type UserRecord,
} from "./registry.ts";
import { isTokenHash } from "./join_token.ts";
import { labelsProblem } from "./labels.ts";
import { isCertEpoch } from "./cert_epoch.ts";
import { parseSelector } from "./label_selector.ts";

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
  const ttls: Record<string, string> = {};
  for (const key of ["clientCertTtl", "clientCertMaxTtl"] as const) {
    const v = settings[key];
    if (v === undefined) continue;
    if (typeof v !== "string") fail(`settings.${key} must be a duration such as 8h`);
    try {
      parseDuration(v as string, `settings.${key}`);
    } catch (e) {
      fail((e as Error).message);
    }
    ttls[key] = v as string;
  }
  const clusters = doc.clusters ?? [];
  if (!Array.isArray(clusters)) fail("clusters must be a list");
  const seen = new Set<string>();
  const out: RegistryData = {
    version: 1,
    settings: { ...(settings.publicUrl ? { publicUrl: settings.publicUrl as string } : {}), ...ttls },
    clusters: [],
    users: [],
    access: [],
    loadBalancers: [],
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
    if (rec.mode !== undefined && rec.mode !== "impersonate" && rec.mode !== "passthrough") {
      fail(`${at}.mode of '${name}' must be 'impersonate' or 'passthrough'`);
    }
    if (
      rec.port !== undefined &&
      !(Number.isInteger(rec.port) && (rec.port as number) > 0 && (rec.port as number) < 65536)
    ) {
      fail(`${at}.port of '${name}' must be a TCP port number`);
    }
    const labels = rec.labels ?? {};
    const labelProblem = labelsProblem(labels);
    if (labelProblem) fail(`${at}.labels of '${name}': ${labelProblem}`);
    out.clusters.push({
      name,
      tokenHash: rec.tokenHash as string,
      createdAt: typeof rec.createdAt === "string" ? rec.createdAt : new Date(0).toISOString(),
      ...(typeof rec.tokenRotatedAt === "string" ? { tokenRotatedAt: rec.tokenRotatedAt } : {}),
      ...(rec.mode ? { mode: rec.mode as "impersonate" | "passthrough" } : {}),
      ...(rec.port ? { port: rec.port as number } : {}),
      ...(Object.keys(labels).length ? { labels: { ...labels as Record<string, string> } } : {}),
    });
  });
  out.users = validateUsers(doc.users ?? [], fail);
  out.access = validateAccess(doc.access ?? [], fail);
  out.loadBalancers = validateLoadBalancers(doc.loadBalancers ?? [], fail);
  return out;
}

function validateUsers(raw: unknown, fail: (what: string) => never): UserRecord[] {
  if (!Array.isArray(raw)) fail("users must be a list");
  const seen = new Set<string>();
  return (raw as unknown[]).map((u, i) => {
    const at = `users[${i}]`;
    if (!u || typeof u !== "object") fail(`${at} must be a mapping`);
    const rec = u as Record<string, unknown>;
    if (typeof rec.name !== "string" || !isUserName(rec.name)) {
      fail(`${at}.name ${JSON.stringify(rec.name)} is not a valid user name`);
    }
    const name = rec.name as string;
    if (seen.has(name)) fail(`${at}.name '${name}' appears twice`);
    seen.add(name);
    const groups = rec.groups ?? [];
    if (!Array.isArray(groups) || groups.some((g) => typeof g !== "string" || !isUserName(g))) {
      fail(`${at}.groups of '${name}' must be a list of group names`);
    }
    if (rec.tokenHash !== undefined && (typeof rec.tokenHash !== "string" || !isTokenHash(rec.tokenHash))) {
      fail(`${at}.tokenHash of '${name}' must be 'sha256:' and 64 hex digits`);
    }
    if (rec.certEpoch !== undefined && (typeof rec.certEpoch !== "string" || !isCertEpoch(rec.certEpoch))) {
      fail(`${at}.certEpoch of '${name}' must be 12 hex digits starting 1-7`);
    }
    const extra = rec.extra ?? {};
    const problem = extraProblem(extra);
    if (problem) fail(`${at}.extra of '${name}': ${problem}`);
    return {
      name,
      groups: groups as string[],
      createdAt: typeof rec.createdAt === "string" ? rec.createdAt : new Date(0).toISOString(),
      ...(rec.tokenHash ? { tokenHash: rec.tokenHash as string } : {}),
      ...(Object.keys(extra).length ? { extra: extra as Record<string, string[]> } : {}),
      ...(rec.certEpoch ? { certEpoch: rec.certEpoch as string } : {}),
    };
  });
}

function validateAccess(raw: unknown, fail: (what: string) => never): AccessRule[] {
  if (!Array.isArray(raw)) fail("access must be a list");
  return (raw as unknown[]).map((r, i) => {
    const at = `access[${i}]`;
    if (!r || typeof r !== "object") fail(`${at} must be a mapping`);
    const rec = r as Record<string, unknown>;
    const list = (key: string, required: boolean) => {
      const v = rec[key];
      if (v === undefined && !required) return undefined;
      if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== "string" || !x)) {
        fail(`${at}.${key} must be a non-empty list of strings`);
      }
      return v as string[];
    };
    const users = list("users", false);
    const groups = list("groups", false);
    if (!users && !groups) fail(`${at} names neither users nor groups`);
    const clusters = list("clusters", false);
    const selector = rec.clusterSelector;
    if (selector !== undefined) {
      if (typeof selector !== "string" || selector.trim() === "") {
        fail(`${at}.clusterSelector must be a non-empty label selector`);
      }
      try {
        parseSelector(selector as string);
      } catch (e) {
        fail(`${at}: ${(e as Error).message}`);
      }
    }
    if (!clusters && selector === undefined) fail(`${at} needs clusters (name globs) or a clusterSelector`);
    return {
      ...(clusters ? { clusters } : {}),
      ...(selector !== undefined ? { clusterSelector: selector as string } : {}),
      ...(users ? { users } : {}),
      ...(groups ? { groups } : {}),
    };
  });
}

function validateLoadBalancers(raw: unknown, fail: (what: string) => never): LoadBalancerPort[] {
  if (!Array.isArray(raw)) fail("loadBalancers must be a list");
  const taken = new Set<number>();
  const isPort = (p: unknown) => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;
  return (raw as unknown[]).map((r, i) => {
    const at = `loadBalancers[${i}]`;
    const rec = (r ?? {}) as Record<string, unknown>;
    if (typeof rec.cluster !== "string" || !isClusterName(rec.cluster)) {
      fail(`${at}.cluster is not a cluster name`);
    }
    if (typeof rec.service !== "string" || !/^[a-z0-9.-]+\/[a-z0-9.-]+$/.test(rec.service)) {
      fail(`${at}.service must be NAMESPACE/NAME`);
    }
    if (!isPort(rec.port) || !isPort(rec.publicPort)) {
      fail(`${at}.port and .publicPort must be TCP/UDP port numbers`);
    }
    if (rec.protocol !== "TCP" && rec.protocol !== "UDP") fail(`${at}.protocol must be TCP or UDP`);
    const key = (rec.publicPort as number) * 2 + (rec.protocol === "UDP" ? 1 : 0);
    if (taken.has(key)) fail(`${at}.publicPort ${rec.publicPort}/${rec.protocol} is given twice`);
    taken.add(key);
    return {
      cluster: rec.cluster as string,
      service: rec.service as string,
      port: rec.port as number,
      protocol: rec.protocol as "TCP" | "UDP",
      publicPort: rec.publicPort as number,
    };
  });
}

/** True for names usable as user or group names: printable, no spaces at the ends, at most 253 characters. */
export function isUserName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.trim() === name &&
    ![...name].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f);
}

/**
 * What is wrong with a user's extras (key → values), or undefined when nothing is. Keys look like
 * `example.com/team` or `scopes` and are sent as `Impersonate-Extra-KEY` with '/' percent-encoded, as the
 * API server expects for characters not legal in a header name; values travel as header values.
 */
export function extraProblem(extra: unknown): string | undefined {
  if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
    return "extras must map keys to lists of values";
  }
  for (const [key, values] of Object.entries(extra)) {
    if (key.length > 253 || !/^[a-z0-9][-a-z0-9._/]*$/.test(key)) {
      return `extra key '${key}' is not valid: use lowercase letters, digits, '.', '-', '_' and '/', ` +
        "starting with a letter or digit";
    }
    if (!Array.isArray(values) || values.some((v) => typeof v !== "string")) {
      return `extra '${key}' must be a list of strings`;
    }
    if (values.some((v: string) => v.length > 1024 || !/^[\x20-\x7e]*$/.test(v))) {
      return `extra value for '${key}' must be printable ASCII, at most 1,024 characters`;
    }
  }
  return undefined;
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

  watch(onChange: (data: RegistryData) => void, intervalMs = 500): () => Promise<void> {
    let last = "";
    let busy = false;
    let inFlight: Promise<void> = Promise.resolve();
    const tick = () => {
      if (busy) return;
      busy = true;
      inFlight = check();
    };
    const check = async () => {
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
    tick();
    const timer = setInterval(tick, intervalMs);
    return () => {
      clearInterval(timer);
      return inFlight;
    };
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
