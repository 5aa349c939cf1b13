/**
 * Replica leases as Kubernetes Leases (`coordination.k8s.io/v1`) in the hub's namespace of the host
 * cluster: one Lease per replica (`tower-replica-<id>`, holder = replica id, duration = the time to
 * live), renewed every third of it, watched by every replica. A replica counts as alive while a renewal
 * of its Lease has been seen within the time to live — seen by this replica's own clock, so clocks that
 * disagree between nodes do not keep a dead replica alive or drop a live one. The peer address and the
 * draining mark ride as annotations; no secret is ever put in a Lease.
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import { makeInformer } from "../kube/informer.ts";
import type { Logger } from "../log/log.ts";
import { isReplicaId } from "../config/mod.ts";
import { isPeerAddress, type ReplicaLease, type ReplicaLeases } from "./replica_leases.ts";

/** Label every replica Lease carries; the watch selects on it. */
export const replicaLeaseLabel = "tower.dev/hub-replica";
const peerAnnotation = "tower.dev/peer-address";
const drainingAnnotation = "tower.dev/draining";
/** Leases of the label read at most; a namespace holding more is misconfigured and the rest are ignored. */
const maxLeases = 1024;

/** Settings of {@link KubeReplicaLeases}. */
export interface KubeReplicaLeasesOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  ttlMs: number;
  log: Logger;
}

/** What this replica saw of one Lease. */
interface Seen {
  lease: ReplicaLease;
  /** performance.now() when a renewal was last seen. */
  seenAt: number;
  renewTime: string;
}

/** Replica leases in the host cluster. */
export class KubeReplicaLeases implements ReplicaLeases {
  readonly #opts: KubeReplicaLeasesOptions;
  readonly #api: k8s.CoordinationV1Api;
  readonly #seen = new Map<string, Seen>();
  #informer: k8s.Informer<k8s.V1Lease> | undefined;
  #id: string | undefined;
  #peerAddress: string | undefined;
  #draining = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #live: ReplicaLease[] = [];
  #handlers = new Set<(live: ReplicaLease[]) => void>();
  #tick: Promise<void> = Promise.resolve();

  constructor(opts: KubeReplicaLeasesOptions) {
    this.#opts = opts;
    this.#api = opts.kc.makeApiClient(k8s.CoordinationV1Api);
  }

  async hold(id: string, peerAddress?: string): Promise<void> {
    this.#id = id;
    this.#peerAddress = peerAddress;
    const { kc, namespace } = this.#opts;
    const informer = makeInformer(
      kc,
      `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`,
      () => this.#api.listNamespacedLease({ namespace, labelSelector: replicaLeaseLabel, limit: maxLeases }),
      replicaLeaseLabel,
    );
    informer.on("add", (l) => this.#observe(l, true));
    informer.on("update", (l) => this.#observe(l, false));
    informer.on("delete", (l) => {
      const lease = parseLease(l);
      if (lease) this.#seen.delete(lease.id);
      this.#recompute();
    });
    informer.on("error", (e) => {
      this.#opts.log.warn("replica lease watch failed; restarting", { error: e });
      setTimeout(() => void informer.start().catch(() => {}), 1000);
    });
    this.#informer = informer;
    await this.#renew();
    await informer.start();
    this.#timer = setInterval(() => {
      this.#tick = this.#tick.then(() => this.#renew()).catch((e) =>
        this.#opts.log.warn("replica lease not renewed", { error: e })
      ).then(() => this.#recompute());
    }, Math.max(100, Math.floor(this.#opts.ttlMs / 3)));
  }

  live(): ReplicaLease[] {
    return this.#live;
  }

  onChange(handler: (live: ReplicaLease[]) => void): void {
    this.#handlers.add(handler);
  }

  async setDraining(): Promise<void> {
    this.#draining = true;
    this.#tick = this.#tick.then(() => this.#renew());
    await this.#tick;
  }

  async release(): Promise<void> {
    clearInterval(this.#timer);
    await this.#tick.catch(() => {});
    const id = this.#id;
    this.#id = undefined;
    await this.#informer?.stop().catch(() => {});
    this.#informer = undefined;
    if (id) {
      await this.#api.deleteNamespacedLease({ name: leaseName(id), namespace: this.#opts.namespace }).catch(
        () => {},
      );
    }
    this.#seen.delete(id ?? "");
    this.#recompute();
  }

  /** Creates or renews this replica's Lease. */
  async #renew(): Promise<void> {
    const id = this.#id;
    if (!id) return;
    const { namespace, ttlMs } = this.#opts;
    const name = leaseName(id);
    const body: k8s.V1Lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name,
        namespace,
        labels: { [replicaLeaseLabel]: "true" },
        annotations: {
          ...(this.#peerAddress ? { [peerAnnotation]: this.#peerAddress } : {}),
          ...(this.#draining ? { [drainingAnnotation]: "true" } : {}),
        },
      },
      spec: {
        holderIdentity: id,
        leaseDurationSeconds: Math.ceil(ttlMs / 1000),
        renewTime: new k8s.V1MicroTime(),
      },
    };
    try {
      const current = await this.#api.readNamespacedLease({ name, namespace });
      body.metadata!.resourceVersion = current.metadata?.resourceVersion;
      body.spec!.acquireTime = current.spec?.acquireTime;
      await this.#api.replaceNamespacedLease({ name, namespace, body });
    } catch (e) {
      if ((e as { code?: number }).code !== 404) throw e;
      body.spec!.acquireTime = new k8s.V1MicroTime();
      await this.#api.createNamespacedLease({ namespace, body });
    }
  }

  #observe(l: k8s.V1Lease, added: boolean): void {
    const lease = parseLease(l);
    if (!lease) return;
    const renewTime = String(l.spec?.renewTime ?? "");
    const prev = this.#seen.get(lease.id);
    const now = performance.now();
    let seenAt = prev?.seenAt ?? -Infinity;
    if (!prev || prev.renewTime !== renewTime) {
      // A Lease met for the first time counts from its renewTime (a dead replica's stale Lease is not
      // alive); every later renewal counts from when this replica saw it.
      const age = Date.now() - Date.parse(renewTime);
      seenAt = added && !prev ? now - (Number.isFinite(age) ? Math.max(0, age) : Infinity) : now;
    }
    this.#seen.set(lease.id, { lease, seenAt, renewTime });
    this.#recompute();
    // A replica that died long ago leaves its Lease; any live replica removes it.
    if (now - seenAt > 10 * lease.ttlMs && lease.id !== this.#id) {
      void this.#api.deleteNamespacedLease({ name: leaseName(lease.id), namespace: this.#opts.namespace })
        .catch(() => {});
    }
  }

  #recompute(): void {
    const now = performance.now();
    const live = [...this.#seen.values()]
      .filter((s) => now - s.seenAt <= s.lease.ttlMs)
      .map((s) => s.lease)
      .sort((a, b) => a.id.localeCompare(b.id));
    const key = (l: ReplicaLease[]) => l.map((x) => `${x.id}${x.draining ? "(draining)" : ""}`).join(",");
    const changed = key(live) !== key(this.#live);
    this.#live = live;
    if (changed) { for (const h of this.#handlers) h(live); }
  }
}

/** The Lease name of a replica. */
export function leaseName(id: string): string {
  return `tower-replica-${id}`;
}

/** A replica lease from a Lease object, or undefined when it is not a valid one. */
function parseLease(l: k8s.V1Lease): ReplicaLease | undefined {
  const id = l.spec?.holderIdentity;
  const seconds = l.spec?.leaseDurationSeconds;
  if (!isReplicaId(id) || l.metadata?.name !== leaseName(id)) return undefined;
  if (!Number.isInteger(seconds) || seconds! < 1 || seconds! > 600) return undefined;
  const peer = l.metadata?.annotations?.[peerAnnotation];
  if (peer !== undefined && !isPeerAddress(peer)) return undefined;
  const renewed = Date.parse(String(l.spec?.renewTime ?? ""));
  return {
    id,
    renewedAt: Number.isFinite(renewed) ? renewed : 0,
    ttlMs: seconds! * 1000,
    ...(peer ? { peerAddress: peer } : {}),
    ...(l.metadata?.annotations?.[drainingAnnotation] === "true" ? { draining: true } : {}),
  };
}
