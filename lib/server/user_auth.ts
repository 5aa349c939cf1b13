/**
 * Who is calling, and may they reach this cluster. Users authenticate with a bearer token from the
 * registry (stored hashed) or a client certificate issued by the hub CA (CN = user name; the user must
 * still exist in the registry, so removing a user revokes their certificates). Anonymous requests are
 * refused. Authorization is hub-side and coarse: which users/groups may reach which clusters (name globs
 * and label selectors);
 * the cluster's own RBAC decides the rest.
 * @module
 */

import type http from "node:http";
import type { TLSSocket } from "node:tls";
import {
  type AccessRule,
  type ClusterRecord,
  hashToken,
  parseSelector,
  type RegistryData,
  type Requirement,
  selectorMatches,
} from "../registry/mod.ts";
import { timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";

/** An authenticated hub user. */
export interface Identity {
  user: string;
  groups: string[];
  /** Extra attributes from the user's record (key → values). */
  extra?: Record<string, string[]>;
  /** How they proved it. */
  via: "token" | "certificate";
}

/** The result of authenticating a request. */
export type AuthResult = { ok: true; identity: Identity } | { ok: false; reason: string };

function bearerOf(req: http.IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The client certificate's CN per TLS connection: a connection's certificate cannot change, and
 * `getPeerCertificate()` builds a whole object per call (4 % of the hub's CPU at 750 req/s).
 */
const certNames = new WeakMap<TLSSocket, string | undefined>();

function certName(socket: TLSSocket): string | undefined {
  if (certNames.has(socket)) return certNames.get(socket);
  const cn = socket.getPeerCertificate()?.subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  certNames.set(socket, name);
  return name;
}

/**
 * Authenticates a request to the hub. `certOnly` is for passthrough clusters, whose `Authorization`
 * header belongs to the cluster and is not a hub credential.
 */
export function authenticate(
  req: http.IncomingMessage,
  registry: RegistryData,
  certOnly = false,
): AuthResult {
  const socket = req.socket as TLSSocket;
  if (socket.authorized === true && typeof socket.getPeerCertificate === "function") {
    const name = certName(socket);
    const user = registry.users.find((u) => u.name === name);
    if (user) {
      return {
        ok: true,
        identity: { user: user.name, groups: [...user.groups], ...extraOf(user), via: "certificate" },
      };
    }
    return { ok: false, reason: "client certificate names no registered user" };
  }
  if (certOnly) return { ok: false, reason: "this cluster takes a hub client certificate" };
  const token = bearerOf(req);
  if (!token) return { ok: false, reason: "no credentials" };
  const hash = hashToken(token);
  // Compare against every stored hash so the time taken says nothing about which user is close.
  let found: (typeof registry.users)[number] | undefined;
  for (const u of registry.users) if (u.tokenHash && sameHash(u.tokenHash, hash) && !found) found = u;
  if (!found) return { ok: false, reason: "unknown token" };
  return {
    ok: true,
    identity: { user: found.name, groups: [...found.groups], ...extraOf(found), via: "token" },
  };
}

function extraOf(u: { extra?: Record<string, string[]> }): { extra?: Record<string, string[]> } {
  return u.extra ? { extra: u.extra } : {};
}

/** Compiled access-rule patterns (rules are few and reloaded rarely). */
const globs = new Map<string, RegExp>();

/** Glob match on cluster names: `*` any run, `?` one character. */
export function globMatch(pattern: string, name: string): boolean {
  let re = globs.get(pattern);
  if (!re) {
    re = new RegExp(
      "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$",
    );
    if (globs.size > 1000) globs.clear();
    globs.set(pattern, re);
  }
  return re.test(name);
}

/** Parsed cluster selectors of access rules, by their text (rules are few and reloaded rarely). */
const selectors = new Map<string, Requirement[]>();

function selectorOf(text: string): Requirement[] {
  let parsed = selectors.get(text);
  if (!parsed) {
    parsed = parseSelector(text);
    if (selectors.size > 1000) selectors.clear();
    selectors.set(text, parsed);
  }
  return parsed;
}

/** True when `rule` selects `cluster`: by a name glob, by its label selector, or by both when it has both. */
export function ruleSelects(rule: AccessRule, cluster: ClusterRecord): boolean {
  if (rule.clusters && !rule.clusters.some((p) => globMatch(p, cluster.name))) return false;
  if (rule.clusterSelector !== undefined) {
    return selectorMatches(selectorOf(rule.clusterSelector), cluster.labels ?? {});
  }
  return rule.clusters !== undefined;
}

/** True when some access rule lets `who` reach `cluster` (a registered cluster's name). */
export function mayReach(who: Identity, cluster: string, registry: RegistryData): boolean {
  const record = registry.clusters.find((c) => c.name === cluster);
  return record !== undefined &&
    registry.access.some((rule) =>
      (rule.users?.includes(who.user) || rule.groups?.some((g) => who.groups.includes(g))) &&
      ruleSelects(rule, record)
    );
}

/** Clusters `who` may reach, in registry order. */
export function reachableClusters(who: Identity, registry: RegistryData): string[] {
  return registry.clusters.map((c) => c.name).filter((c) => mayReach(who, c, registry));
}
