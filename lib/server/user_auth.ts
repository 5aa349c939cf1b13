/**
 * Who is calling, and may they reach this cluster. Users authenticate with a bearer token from the
 * registry (stored hashed), a client certificate issued by the hub CA (CN = user name; the user must
 * still exist in the registry, so removing a user revokes their certificates; an expired one is refused
 * as expired), or an ID token from a trusted OpenID Connect issuer. Anonymous requests are
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
  serialInEpoch,
} from "../registry/mod.ts";
import { timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import type { Logger } from "../log/log.ts";
import { OidcVerifier } from "./oidc_verifier.ts";

/** An authenticated hub user. */
export interface Identity {
  user: string;
  groups: string[];
  /** Extra attributes from the user's record (key → values). */
  extra?: Record<string, string[]>;
  /** How they proved it. */
  via: "token" | "certificate" | "oidc";
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
const certNames = new WeakMap<TLSSocket, { name?: string | undefined; serial: string }>();

function certOf(socket: TLSSocket): { name?: string | undefined; serial: string } {
  const known = certNames.get(socket);
  if (known) return known;
  const peer = socket.getPeerCertificate();
  const cn = peer?.subject?.CN;
  const cert = { name: Array.isArray(cn) ? cn[0] : cn, serial: peer?.serialNumber ?? "" };
  certNames.set(socket, cert);
  return cert;
}

/** What the authenticator needs besides the registry. */
export interface UserAuthOptions {
  /** PEM of the hub CA, to tell an expired hub certificate from a foreign one. */
  clientCaPem?: string;
  /** Verifier of OIDC ID tokens, when the hub trusts identity providers. */
  oidc?: OidcVerifier;
  log: Logger;
}

/**
 * Authenticates requests to the hub: hub client certificates (CN = a registered user), hashed static
 * bearer tokens from the registry, and OIDC ID tokens from trusted issuers.
 */
export class UserAuthenticator {
  readonly #opts: UserAuthOptions;
  readonly #caCert: x509.X509Certificate | undefined;
  /** Per TLS connection: why its unverified certificate is refused for its age, or "" (see certRefusal). */
  readonly #certRefusals = new WeakMap<TLSSocket, Promise<string>>();

  constructor(opts: UserAuthOptions) {
    this.#opts = opts;
    this.#caCert = opts.clientCaPem ? new x509.X509Certificate(opts.clientCaPem) : undefined;
  }

  /**
   * Authenticates a request. `certOnly` is for passthrough clusters, whose `Authorization` header
   * belongs to the cluster and is not a hub credential.
   */
  async authenticate(
    req: http.IncomingMessage,
    registry: RegistryData,
    certOnly = false,
  ): Promise<AuthResult> {
    const socket = req.socket as TLSSocket;
    const hasCerts = typeof socket.getPeerCertificate === "function";
    if (socket.authorized === true && hasCerts) {
      const { name, serial } = certOf(socket);
      const user = registry.users.find((u) => u.name === name);
      // A certificate from before the record's epoch (user removed and re-added, or revoke-certs) is dead.
      if (user && !serialInEpoch(serial, user.certEpoch)) {
        return { ok: false, reason: "client certificate was revoked" };
      }
      if (user) {
        return {
          ok: true,
          identity: { user: user.name, groups: [...user.groups], ...extraOf(user), via: "certificate" },
        };
      }
      return { ok: false, reason: "client certificate names no registered user" };
    }
    if (hasCerts && this.#caCert) {
      const refusal = await this.#certRefusal(socket);
      if (refusal) return { ok: false, reason: refusal };
    }
    if (certOnly) return { ok: false, reason: "this cluster takes a hub client certificate" };
    const token = bearerOf(req);
    if (!token) return { ok: false, reason: "no credentials" };
    if (this.#opts.oidc && OidcVerifier.looksLikeJwt(token)) {
      const r = await this.#opts.oidc.verify(token);
      if (!r.ok) {
        this.#opts.log.info("oidc token refused", {
          ...(r.issuer ? { issuer: r.issuer } : {}),
          reason: r.reason,
          remote: socket.remoteAddress,
        });
        return { ok: false, reason: r.reason };
      }
      return { ok: true, identity: { user: r.user, groups: r.groups, via: "oidc" } };
    }
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

  /**
   * Why a client certificate that TLS did not verify is refused, when it is the hub's own and only its
   * validity period is wrong; "" otherwise (a foreign certificate is ignored, as before). The front door
   * asks for certificates without requiring them, and Deno's TLS reports an expired one as unverified
   * without saying why, so the hub checks the signature against its CA (with @peculiar/x509) and the
   * dates itself, to tell the user their certificate expired rather than that they sent nothing.
   */
  #certRefusal(socket: TLSSocket): Promise<string> {
    let refusal = this.#certRefusals.get(socket);
    if (refusal) return refusal;
    refusal = (async () => {
      const raw = socket.getPeerCertificate()?.raw;
      if (!raw?.length || !this.#caCert) return "";
      try {
        const cert = new x509.X509Certificate(raw);
        if (!await cert.verify({ publicKey: this.#caCert, signatureOnly: true })) return "";
        const now = Date.now();
        if (cert.notAfter.getTime() < now) {
          return `client certificate expired at ${cert.notAfter.toISOString()}; get a new kubeconfig`;
        }
        if (cert.notBefore.getTime() > now) {
          return `client certificate is not valid before ${cert.notBefore.toISOString()}`;
        }
        return "";
      } catch {
        return "";
      }
    })();
    this.#certRefusals.set(socket, refusal);
    return refusal;
  }
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
