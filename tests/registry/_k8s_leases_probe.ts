/**
 * Run inside a test cluster's network namespace (where its API server is): two replicas' Kubernetes
 * leases, driven step by step; prints one JSON line per observation for k8s_replica_leases_test.ts.
 *
 *   deno run -A tests/registry/_k8s_leases_probe.ts KUBECONFIG
 * @module
 */
// deno-lint-ignore-file no-console

import * as k8s from "@kubernetes/client-node";
import { KubeReplicaLeases, leaseName, replicaLeaseLabel } from "../../lib/registry/k8s_replica_leases.ts";
import { logger } from "../../lib/log/log.ts";

const kc = new k8s.KubeConfig();
kc.loadFromFile(Deno.args[0]!);
const namespace = "default";
const log = logger({ component: "probe" });
const api = kc.makeApiClient(k8s.CoordinationV1Api);
const say = (step: string, fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ step, ...fields }));
const ids = (l: KubeReplicaLeases) =>
  l.live().map((x) => `${x.id}${x.draining ? "(draining)" : ""}`).join(",");

/** Resolves when `l` sees exactly `want` (ids, draining marked); rejects after 20 s. */
function sees(l: KubeReplicaLeases, want: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`saw '${ids(l)}', not '${want}'`)), 20_000);
    const check = () => {
      if (ids(l) !== want) return;
      clearTimeout(timer);
      resolve();
    };
    l.onChange(check);
    check();
  });
}

// A replica that died long ago, and one that died just now: their Leases stay, renewals stopped.
const stale = (id: string, ageMs: number): k8s.V1Lease => ({
  metadata: { name: leaseName(id), namespace, labels: { [replicaLeaseLabel]: "true" } },
  spec: { holderIdentity: id, leaseDurationSeconds: 3, renewTime: new k8s.V1MicroTime(Date.now() - ageMs) },
});
await api.createNamespacedLease({ namespace, body: stale("gone-long", 120_000) });
await api.createNamespacedLease({ namespace, body: stale("gone-now", 4000) });

const a = new KubeReplicaLeases({ kc, namespace, ttlMs: 3000, log });
const b = new KubeReplicaLeases({ kc, namespace, ttlMs: 3000, log });
try {
  await a.hold("hub-a", "10.0.0.1:8444");
  await b.hold("hub-b", "10.0.0.2:8444");
  await sees(a, "hub-a,hub-b");
  await sees(b, "hub-a,hub-b");
  say("both", { a: a.live(), b: b.live() });
  // The long-dead replica's Lease is removed by a live replica.
  for (let i = 0; i < 40; i++) {
    const left = await api.listNamespacedLease({ namespace, labelSelector: replicaLeaseLabel });
    if (!left.items.some((l) => l.metadata?.name === leaseName("gone-long"))) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const names = (await api.listNamespacedLease({ namespace, labelSelector: replicaLeaseLabel })).items.map((
    l,
  ) => l.metadata?.name);
  say("cleaned", { names });
  await a.setDraining();
  await sees(b, "hub-a(draining),hub-b");
  say("draining", { b: ids(b) });
  await a.release();
  await sees(b, "hub-b");
  say("released", { b: ids(b) });
} finally {
  await a.release();
  await b.release();
  await api.deleteNamespacedLease({ name: leaseName("gone-now"), namespace }).catch(() => {});
  await api.deleteNamespacedLease({ name: leaseName("gone-long"), namespace }).catch(() => {});
}
say("done", {});
Deno.exit(0);
