/**
 * How registry records are stored in the host cluster: custom resources of group `tower.dev`
 * (Cluster, User, AccessRule, LoadBalancerPort), token hashes in labelled Secrets, hub settings in a
 * labelled ConfigMap. Pure conversions both ways; the CRDs are in deploy/chart/tower-hub/crds/.
 * @module
 */

import { createHash } from "node:crypto";
import type { AccessRule, ClusterRecord, HubSettings, LoadBalancerPort, UserRecord } from "./registry.ts";

/** API group and version of Tower's custom resources. */
export const group = "tower.dev";
/** API version of Tower's custom resources. */
export const version = "v1alpha1";
/** `apiVersion` field of Tower's custom resources. */
export const apiVersion = `${group}/${version}`;

/** The custom resources: kind and plural. */
export const kinds = {
  cluster: { kind: "Cluster", plural: "clusters" },
  user: { kind: "User", plural: "users" },
  access: { kind: "AccessRule", plural: "accessrules" },
  lbPort: { kind: "LoadBalancerPort", plural: "loadbalancerports" },
} as const;

/** Label on Secrets holding a token hash: `cluster` or `user`. */
export const tokenLabel = "tower.dev/token-for";
/** Label on the settings ConfigMap. */
export const settingsLabel = "tower.dev/settings";
/** Name of the settings ConfigMap. */
export const settingsName = "tower-settings";
/** Annotation keeping a record's creation time across export and import. */
export const createdAtAnnotation = "tower.dev/created-at";
/** Annotation on a token Secret: when the token was last rotated. */
export const rotatedAtAnnotation = "tower.dev/token-rotated-at";
/** Labels on everything the hub writes. */
export const managedLabels: Record<string, string> = { "app.kubernetes.io/managed-by": "tower-hub" };

/** Metadata of a stored object, as far as the registry uses it. */
export interface StoredMeta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: Date | string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A custom resource as read from the API. */
export interface StoredObject {
  apiVersion?: string;
  kind?: string;
  metadata?: StoredMeta;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

/** A Secret or ConfigMap as far as the registry reads it. */
export interface StoredData {
  metadata?: StoredMeta;
  data?: Record<string, string>;
}

const objectName = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The object name of a user: the user name when it is a valid object name, else `u-` and a hash. */
export function userObjectName(user: string): string {
  if (objectName.test(user) && user.length <= 200) return user;
  return "u-" + createHash("sha256").update(user, "utf8").digest("hex").slice(0, 32);
}

/** Name of the Secret with a cluster's join-token hash. */
export function clusterTokenSecret(cluster: string): string {
  return `tower-cluster-${cluster}`;
}

/** Name of the Secret with a user's bearer-token hash. */
export function userTokenSecret(userObject: string): string {
  return `tower-user-${userObject}`;
}

/** Name of the object of an LB port allocation: `tcp-30001`. */
export function lbPortName(a: Pick<LoadBalancerPort, "protocol" | "publicPort">): string {
  return `${a.protocol.toLowerCase()}-${a.publicPort}`;
}

function createdAt(meta: StoredMeta | undefined): string {
  const a = meta?.annotations?.[createdAtAnnotation];
  if (a) return a;
  const t = meta?.creationTimestamp;
  return t ? new Date(t).toISOString() : new Date(0).toISOString();
}

/** The token hash stored in a Secret, or undefined. */
export function tokenHashOf(secret: StoredData | undefined): string | undefined {
  const b64 = secret?.data?.tokenHash;
  return b64 === undefined ? undefined : atob(b64);
}

/**
 * A cluster record from its object and token Secret. Without a Secret (a Cluster applied with kubectl
 * before any token was issued) the hash is empty: no token matches it until `rotate-token` sets one.
 */
export function clusterFromObject(o: StoredObject, secret: StoredData | undefined): ClusterRecord {
  const spec = o.spec ?? {};
  const rotated = secret?.metadata?.annotations?.[rotatedAtAnnotation];
  return {
    name: o.metadata?.name ?? "",
    tokenHash: tokenHashOf(secret) ?? "",
    createdAt: createdAt(o.metadata),
    ...(rotated ? { tokenRotatedAt: rotated } : {}),
    ...(spec.mode !== undefined ? { mode: spec.mode as ClusterRecord["mode"] } : {}),
    ...(spec.port !== undefined ? { port: spec.port as number } : {}),
    ...(spec.labels && Object.keys(spec.labels).length
      ? { labels: spec.labels as Record<string, string> }
      : {}),
  };
}

/** The spec of a cluster's object. */
export function clusterSpec(c: ClusterRecord): Record<string, unknown> {
  return {
    ...(c.mode ? { mode: c.mode } : {}),
    ...(c.port ? { port: c.port } : {}),
    ...(c.labels && Object.keys(c.labels).length ? { labels: c.labels } : {}),
  };
}

/** A user record from its object and token Secret. */
export function userFromObject(o: StoredObject, secret: StoredData | undefined): UserRecord {
  const spec = o.spec ?? {};
  const hash = tokenHashOf(secret);
  const extra = spec.extra as Record<string, string[]> | undefined;
  return {
    name: typeof spec.name === "string" ? spec.name : o.metadata?.name ?? "",
    groups: Array.isArray(spec.groups) ? spec.groups as string[] : [],
    ...(hash ? { tokenHash: hash } : {}),
    ...(extra && Object.keys(extra).length ? { extra } : {}),
    ...(typeof spec.certEpoch === "string" ? { certEpoch: spec.certEpoch } : {}),
    createdAt: createdAt(o.metadata),
  };
}

/** The spec of a user's object. */
export function userSpec(u: UserRecord): Record<string, unknown> {
  return {
    name: u.name,
    groups: u.groups,
    ...(u.extra ? { extra: u.extra } : {}),
    ...(u.certEpoch ? { certEpoch: u.certEpoch } : {}),
  };
}

/** An access rule from its object. */
export function accessFromObject(o: StoredObject): AccessRule {
  const spec = o.spec ?? {};
  return {
    ...(Array.isArray(spec.users) ? { users: spec.users as string[] } : {}),
    ...(Array.isArray(spec.groups) ? { groups: spec.groups as string[] } : {}),
    ...(Array.isArray(spec.clusters) ? { clusters: spec.clusters as string[] } : {}),
    ...(typeof spec.clusterSelector === "string" ? { clusterSelector: spec.clusterSelector } : {}),
  };
}

/** The spec of an access rule's object. */
export function accessSpec(r: AccessRule): Record<string, unknown> {
  return {
    ...(r.users ? { users: r.users } : {}),
    ...(r.groups ? { groups: r.groups } : {}),
    ...(r.clusters ? { clusters: r.clusters } : {}),
    ...(r.clusterSelector !== undefined ? { clusterSelector: r.clusterSelector } : {}),
  };
}

/** An LB port allocation from its object. */
export function lbPortFromObject(o: StoredObject): LoadBalancerPort {
  const s = o.spec ?? {};
  return {
    cluster: s.cluster as string,
    service: s.service as string,
    port: s.port as number,
    protocol: s.protocol as "TCP" | "UDP",
    publicPort: s.publicPort as number,
  };
}

/** The spec of an LB port allocation's object. */
export function lbPortSpec(a: LoadBalancerPort): Record<string, unknown> {
  return {
    cluster: a.cluster,
    service: a.service,
    port: a.port,
    protocol: a.protocol,
    publicPort: a.publicPort,
  };
}

const settingKeys = ["publicUrl", "clientCertTtl", "clientCertMaxTtl"] as const;

/** Hub settings from the settings ConfigMap (one key per setting). */
export function settingsFromConfigMap(cm: StoredData | undefined): HubSettings {
  const out: HubSettings = {};
  for (const k of settingKeys) {
    const v = cm?.data?.[k];
    if (typeof v === "string" && v) out[k] = v;
  }
  return out;
}

/** The settings ConfigMap's data for `settings`. */
export function settingsData(settings: HubSettings): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of settingKeys) if (settings[k]) out[k] = settings[k]!;
  return out;
}

/** Orders access rules as they were added: by object name (the hub names them by creation time). */
export function byName(a: StoredObject, b: StoredObject): number {
  const x = a.metadata?.name ?? "", y = b.metadata?.name ?? "";
  return x < y ? -1 : x > y ? 1 : 0;
}

/** A fresh access rule object name that sorts after earlier ones: `access-<time>-<random>`. */
export function newAccessName(index = 0): string {
  const t = Date.now().toString(36).padStart(9, "0");
  const i = index.toString(36).padStart(4, "0");
  const r = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(16).padStart(2, "0"))
    .join(
      "",
    );
  return `access-${t}-${i}${r}`;
}
