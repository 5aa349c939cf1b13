/**
 * The status of Cluster objects: how many agent sessions each hub replica holds (`status.hubs`), their
 * sum (`status.connectedAgents`) and a `Connected` condition. A replica writes only when an agent of a
 * cluster connects or disconnects, coalesced over a short window, and only when the result differs
 * from what is stored: traffic never causes a write, and a burst of reconnects causes one.
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import type { Logger } from "../log/log.ts";
import { apiMessage, apiStatus, type HostCluster } from "../kube/host_cluster.ts";
import type { KubernetesRegistry } from "./k8s_registry.ts";
import { group, kinds, type StoredObject, version } from "./k8s_resources.ts";

/** One replica's entry in `status.hubs`. */
export interface HubAgents {
  replica: string;
  agents: number;
  since?: string;
}

interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

/** The status a cluster should have once `mine` replaces this replica's entry in `current`. */
export function nextClusterStatus(
  current: Record<string, unknown> | undefined,
  mine: HubAgents,
  now: string,
): Record<string, unknown> {
  const hubs = hubsOf(current).filter((h) => h.replica !== mine.replica);
  if (mine.agents > 0) hubs.push(mine);
  return withHubs(current, hubs, now);
}

/**
 * The status a cluster should have without the entries of replicas `isGone` names (they died without
 * removing their own: kill -9, a lost node), or undefined when it has none of them.
 */
export function prunedClusterStatus(
  current: Record<string, unknown> | undefined,
  isGone: (entry: HubAgents) => boolean,
  now: string,
): Record<string, unknown> | undefined {
  const hubs = hubsOf(current);
  const kept = hubs.filter((h) => !isGone(h));
  return kept.length === hubs.length ? undefined : withHubs(current, kept, now);
}

function hubsOf(status: Record<string, unknown> | undefined): HubAgents[] {
  const hubs = status?.hubs;
  return Array.isArray(hubs) ? [...hubs as HubAgents[]] : [];
}

/** `current` with `hubs` as its entries, their sum, and the Connected condition to match. */
function withHubs(
  current: Record<string, unknown> | undefined,
  hubs: HubAgents[],
  now: string,
): Record<string, unknown> {
  hubs.sort((a, b) => a.replica < b.replica ? -1 : a.replica > b.replica ? 1 : 0);
  const total = hubs.reduce((n, h) => n + h.agents, 0);
  const old = ((current?.conditions ?? []) as Condition[]).find((c) => c.type === "Connected");
  const status = total > 0 ? "True" : "False";
  const connected: Condition = {
    type: "Connected",
    status,
    reason: total > 0 ? "AgentsConnected" : "NoAgents",
    message: total > 0
      ? `${total} agent session(s) on ${hubs.length} hub replica(s)`
      : "no agent of this cluster is connected",
    lastTransitionTime: old?.status === status && old.lastTransitionTime ? old.lastTransitionTime : now,
  };
  const others = ((current?.conditions ?? []) as Condition[]).filter((c) => c.type !== "Connected");
  return { ...(current ?? {}), connectedAgents: total, hubs, conditions: [...others, connected] };
}

/**
 * An entry of a replica without a live lease is removed when this replica saw that one alive before,
 * or when the entry is older than this (a replica this one never saw live may be one whose lease is
 * not in this replica's watch yet, having just started).
 */
const unseenReplicaGraceMs = 60_000;

/** Writes this replica's agent counts into Cluster status, coalesced. */
export class ClusterStatusWriter {
  readonly #registry: KubernetesRegistry;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #namespace: string;
  readonly #replica: string;
  readonly #log: Logger;
  readonly #coalesceMs: number;
  readonly #pending = new Map<string, HubAgents>();
  /** What this replica last reported per cluster, restored should another replica remove it. */
  readonly #reported = new Map<string, HubAgents>();
  #stopRepair: (() => void) | undefined;
  /** Replicas this one has seen holding a live lease. */
  readonly #seenLive = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing: Promise<void> = Promise.resolve();
  /** Status writes made so far (for measurements and tests). */
  writes = 0;

  constructor(
    host: HostCluster,
    registry: KubernetesRegistry,
    replica: string,
    log: Logger,
    coalesceMs = 500,
  ) {
    this.#registry = registry;
    this.#custom = host.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#namespace = host.namespace;
    this.#replica = replica;
    this.#log = log.with({ component: "cluster-status" });
    this.#coalesceMs = coalesceMs;
  }

  /** The replica name this writer reports as. */
  get replica(): string {
    return this.#replica;
  }

  /**
   * Clears entries a previous run of this replica left behind (it holds no agents yet), and from then
   * on puts this replica's entry back whenever the stored one differs from what it reported (another
   * replica pruned it while this one's lease looked lapsed to it).
   */
  async start(clusters: string[]): Promise<void> {
    this.#stopRepair = this.#registry.onEvent(() => {
      for (const [cluster, mine] of this.#reported) {
        if (this.#pending.has(cluster)) continue;
        const stored = hubsOf(this.#registry.clusterObject(cluster)?.status).find((h) =>
          h.replica === this.#replica
        );
        // Compared field by field: the API server gives the keys back in its own order.
        const same = (stored?.agents ?? 0) === mine.agents && stored?.since === mine.since;
        if (!same && this.#registry.clusterObject(cluster)) {
          this.#schedule(cluster, mine);
        }
      }
    });
    for (const name of clusters) {
      const hubs = (this.#registry.clusterObject(name)?.status?.hubs ?? []) as HubAgents[];
      if (hubs.some((h) => h.replica === this.#replica)) {
        this.#pending.set(name, { replica: this.#replica, agents: 0 });
      }
    }
    await this.flush();
  }

  /** This replica now holds `agents` sessions of `cluster` (the oldest since `since`). */
  set(cluster: string, agents: number, since?: string): void {
    const mine = { replica: this.#replica, agents, ...(agents > 0 && since ? { since } : {}) };
    this.#reported.set(cluster, mine);
    this.#schedule(cluster, mine);
  }

  #schedule(cluster: string, mine: HubAgents): void {
    this.#pending.set(cluster, mine);
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#coalesceMs);
  }

  /** Writes what is pending now. */
  flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const batch = new Map(this.#pending);
    this.#pending.clear();
    this.#flushing = this.#flushing.then(async () => {
      for (const [cluster, mine] of batch) {
        await this.#write(cluster, (status, now) => nextClusterStatus(status, mine, now));
      }
    });
    return this.#flushing;
  }

  /**
   * Removes the entries of replicas without a live lease (`live`: the replicas that hold one now) from
   * the status of `clusters`. Every replica does this when the live set changes; a lost race is re-read.
   */
  pruneGone(live: string[], clusters: string[], now = Date.now()): Promise<void> {
    for (const id of live) this.#seenLive.add(id);
    const alive = new Set(live);
    const isGone = (h: HubAgents) =>
      !alive.has(h.replica) && h.replica !== this.#replica &&
      (this.#seenLive.has(h.replica) || !h.since || now - Date.parse(h.since) > unseenReplicaGraceMs);
    const stale = clusters.filter((c) =>
      prunedClusterStatus(this.#registry.clusterObject(c)?.status, isGone, "") !== undefined
    );
    if (!stale.length) return this.#flushing;
    this.#flushing = this.#flushing.then(async () => {
      for (const cluster of stale) {
        const removed = await this.#write(
          cluster,
          (status, at) => prunedClusterStatus(status, isGone, at),
        );
        if (removed) this.#log.info("gone replicas removed from cluster status", { cluster });
      }
    });
    return this.#flushing;
  }

  /** Writes `change(status)` unless it is undefined or the same; whether it wrote. */
  async #write(
    cluster: string,
    change: (status: Record<string, unknown> | undefined, now: string) => Record<string, unknown> | undefined,
  ): Promise<boolean> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const obj = this.#registry.clusterObject(cluster);
      if (!obj) return false;
      const next = change(obj.status, new Date().toISOString());
      if (!next || JSON.stringify(next) === JSON.stringify(obj.status ?? {})) return false;
      const rv = obj.metadata?.resourceVersion;
      try {
        await this.#custom.replaceNamespacedCustomObjectStatus({
          group,
          version,
          namespace: this.#namespace,
          plural: kinds.cluster.plural,
          name: cluster,
          body: { ...obj, status: next } satisfies StoredObject,
        });
        this.writes++;
        this.#log.debug("cluster status written", { cluster, writes: this.writes });
        // Wait for the watch to show the write, so a following change starts from it.
        await this.#seen(cluster, rv);
        return true;
      } catch (e) {
        const status = apiStatus(e);
        if (status === 404) return false;
        if (status !== 409) {
          this.#log.warn("cluster status not written", { cluster, error: apiMessage(e) });
          return false;
        }
        await this.#seen(cluster, rv);
      }
    }
    return false;
  }

  /** Resolves when the cached object's version differs from `rv` (or after 5 s). */
  #seen(cluster: string, rv: string | undefined): Promise<void> {
    const moved = () => this.#registry.clusterObject(cluster)?.metadata?.resourceVersion !== rv;
    if (moved()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop();
        resolve();
      };
      const timer = setTimeout(done, 5_000);
      const stop = this.#registry.onEvent(() => moved() && done());
    });
  }

  /** Removes this replica's entries (graceful stop) and stops. */
  async close(clusters: string[]): Promise<void> {
    this.#stopRepair?.();
    this.#reported.clear();
    for (const c of clusters) this.#pending.set(c, { replica: this.#replica, agents: 0 });
    await this.flush();
  }
}
