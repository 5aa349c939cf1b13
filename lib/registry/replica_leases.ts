/**
 * Which hub replicas are alive: each replica holds a lease it renews, and a lease not renewed within its
 * time to live is ignored. The interface has one backend per registry: lease files in a shared data dir
 * (several hubs on one host, and the single hub of the YAML registry), and Kubernetes Leases in the host
 * cluster for replicas of a Deployment (k8s_replica_leases.ts, imported directly: it loads the Kubernetes
 * client, which the admin commands must not).
 * @module
 */

import { join } from "node:path";
import type { Logger } from "../log/log.ts";
import { isReplicaId } from "../config/mod.ts";

/** One replica as its lease describes it. */
export interface ReplicaLease {
  /** Replica identity, as the hub says in its control hello. */
  id: string;
  /** When the lease was last renewed (ms since the epoch). */
  renewedAt: number;
  /** The lease is void this long after `renewedAt`. */
  ttlMs: number;
  /** `HOST:PORT` of the replica's peer link, when it has one. */
  peerAddress?: string;
  /** The replica is draining: not counted as a place for new tunnels, still reachable by peers. */
  draining?: boolean;
}

/** The live replicas, kept current by renewing this replica's own lease. */
export interface ReplicaLeases {
  /** Takes this replica's lease and keeps renewing it until {@link ReplicaLeases.release}. */
  hold(id: string, peerAddress?: string): Promise<void>;
  /** Replicas whose lease has not expired (this one included while it holds its lease). */
  live(): ReplicaLease[];
  /** Marks this replica's lease as draining, at once. */
  setDraining(): Promise<void>;
  /** Calls `handler` whenever the set of live replicas changes. */
  onChange(handler: (live: ReplicaLease[]) => void): void;
  /** Gives up the lease at once, so other replicas stop counting this one; stops renewing. */
  release(): Promise<void>;
}

/** Settings of {@link FileReplicaLeases}. */
export interface FileReplicaLeasesOptions {
  /** Directory holding one `<id>.json` lease per replica. */
  dir: string;
  ttlMs: number;
  log: Logger;
}

/** Leases directory entries read per renewal at most; a directory larger than this is not scanned whole. */
const maxLeaseFiles = 1024;
/** A lease longer than this is not a lease. */
const maxLeaseTtlMs = 600_000;
/** A lease file larger than this is not a lease. */
const maxLeaseBytes = 4096;

/** Replica leases as files in a directory shared by the replicas. */
export class FileReplicaLeases implements ReplicaLeases {
  readonly #opts: FileReplicaLeasesOptions;
  #id: string | undefined;
  #peerAddress: string | undefined;
  #draining = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #live: ReplicaLease[] = [];
  #handlers = new Set<(live: ReplicaLease[]) => void>();
  #tick: Promise<void> = Promise.resolve();

  constructor(opts: FileReplicaLeasesOptions) {
    this.#opts = opts;
  }

  async hold(id: string, peerAddress?: string): Promise<void> {
    this.#id = id;
    this.#peerAddress = peerAddress;
    await Deno.mkdir(this.#opts.dir, { recursive: true, mode: 0o700 });
    await this.#renew();
    this.#timer = setInterval(() => {
      this.#tick = this.#tick.then(() => this.#renew()).catch((e) =>
        this.#opts.log.warn("replica lease not renewed", { error: e })
      );
    }, Math.max(100, Math.floor(this.#opts.ttlMs / 3)));
  }

  live(): ReplicaLease[] {
    return this.#live;
  }

  async setDraining(): Promise<void> {
    this.#draining = true;
    this.#tick = this.#tick.then(() => this.#renew());
    await this.#tick;
  }

  onChange(handler: (live: ReplicaLease[]) => void): void {
    this.#handlers.add(handler);
  }

  async release(): Promise<void> {
    clearInterval(this.#timer);
    await this.#tick;
    const id = this.#id;
    this.#id = undefined;
    if (id) await Deno.remove(this.#path(id)).catch(() => {});
    this.#update(this.#live.filter((l) => l.id !== id));
  }

  #path(id: string): string {
    return join(this.#opts.dir, `${id}.json`);
  }

  async #renew(): Promise<void> {
    const id = this.#id;
    if (!id) return;
    const now = Date.now();
    const mine: ReplicaLease = {
      id,
      renewedAt: now,
      ttlMs: this.#opts.ttlMs,
      ...(this.#peerAddress ? { peerAddress: this.#peerAddress } : {}),
      ...(this.#draining ? { draining: true } : {}),
    };
    const tmp = `${this.#path(id)}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(mine), { mode: 0o600 });
    await Deno.rename(tmp, this.#path(id));
    const live: ReplicaLease[] = [];
    let seen = 0;
    for await (const entry of Deno.readDir(this.#opts.dir)) {
      if (++seen > maxLeaseFiles) break;
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const path = join(this.#opts.dir, entry.name);
      const lease = await readLease(path);
      if (!lease) continue;
      const expiredFor = now - (lease.renewedAt + lease.ttlMs);
      // A renewal from the future or an endless lease would keep a dead replica alive: not a lease.
      if (lease.renewedAt > now + lease.ttlMs || lease.ttlMs > maxLeaseTtlMs) continue;
      if (expiredFor <= 0) live.push(lease);
      // A replica that died without releasing leaves its file; one long expired is removed by any peer.
      else if (expiredFor > 10 * lease.ttlMs) await Deno.remove(path).catch(() => {});
    }
    if (this.#id) this.#update(live.sort((a, b) => a.id.localeCompare(b.id)));
  }

  #update(live: ReplicaLease[]): void {
    const key = (l: ReplicaLease[]) => l.map((x) => `${x.id}${x.draining ? "(draining)" : ""}`).join(",");
    const changed = key(live) !== key(this.#live);
    this.#live = live;
    if (changed) { for (const h of this.#handlers) h(live); }
  }
}

/** True for `HOST:PORT` (a name, an IPv4 address, or a bracketed IPv6 address) as a lease carries it. */
export function isPeerAddress(s: unknown): s is string {
  return typeof s === "string" && s.length <= 260 &&
    /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(s) &&
    Number(s.slice(s.lastIndexOf(":") + 1)) < 65536;
}

async function readLease(path: string): Promise<ReplicaLease | undefined> {
  try {
    if ((await Deno.stat(path)).size > maxLeaseBytes) return undefined;
    const raw = JSON.parse(await Deno.readTextFile(path)) as Partial<ReplicaLease>;
    if (
      !isReplicaId(raw.id) || typeof raw.renewedAt !== "number" || typeof raw.ttlMs !== "number" ||
      !Number.isFinite(raw.renewedAt) || !(raw.ttlMs > 0)
    ) return undefined;
    if (raw.peerAddress !== undefined && !isPeerAddress(raw.peerAddress)) return undefined;
    return {
      id: raw.id as string,
      renewedAt: raw.renewedAt,
      ttlMs: raw.ttlMs,
      ...(raw.peerAddress ? { peerAddress: raw.peerAddress } : {}),
      ...(raw.draining === true ? { draining: true } : {}),
    };
  } catch {
    // Removed between listing and reading, or half-written by a crashed replica: not a lease.
    return undefined;
  }
}
