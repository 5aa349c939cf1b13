/**
 * Admin commands for hub users and access rules, and kubeconfigs for users: one context per cluster the
 * user may reach, pinned to the hub CA, with a fresh client certificate from the hub CA.
 * @module
 */

import { hostname } from "node:os";
import YAML from "yaml";
import { ConfigError, parseDuration } from "../config/mod.ts";
import {
  type AccessRule,
  extraProblem,
  hashToken,
  isUserName,
  newCertEpoch,
  newToken,
  parseSelector,
  type RegistryData,
} from "../registry/mod.ts";
import type { HubStorage } from "./hub_storage.ts";
import { issueLeaf } from "./tls_material.ts";
import { reachableClusters } from "./user_auth.ts";

function checkUserName(name: string, what = "user name"): string {
  if (!isUserName(name)) {
    throw new ConfigError(`${what} '${name}' is not valid (printable, 1-253 characters)`);
  }
  return name;
}

/** Adds a user; with `withToken` also a bearer token (returned once; the hub keeps its hash). */
export async function addUser(
  storage: HubStorage,
  name: string,
  groups: string[],
  withToken: boolean,
  extra: Record<string, string[]> = {},
): Promise<{ token: string | undefined }> {
  checkUserName(name);
  for (const g of groups) checkUserName(g, "group name");
  const problem = extraProblem(extra);
  if (problem) throw new ConfigError(problem);
  const token = withToken ? newToken() : undefined;
  await storage.registry.update((data) => {
    if (data.users.some((u) => u.name === name)) throw new ConfigError(`user '${name}' already exists`);
    data.users.push({
      name,
      groups,
      createdAt: new Date().toISOString(),
      certEpoch: newCertEpoch(),
      ...(token ? { tokenHash: hashToken(token) } : {}),
      ...(Object.keys(extra).length ? { extra } : {}),
    });
  });
  return { token };
}

/** Removes a user; their token and certificates stop working at once. */
export async function removeUser(storage: HubStorage, name: string): Promise<void> {
  await storage.registry.update((data) => {
    const i = data.users.findIndex((u) => u.name === name);
    if (i < 0) throw new ConfigError(`user '${name}' does not exist`);
    data.users.splice(i, 1);
  });
}

/** Revokes every client certificate issued to a user so far; the next `kubeconfig --user` works again. */
export async function revokeUserCerts(storage: HubStorage, name: string): Promise<void> {
  await storage.registry.update((data) => {
    const user = data.users.find((u) => u.name === name);
    if (!user) throw new ConfigError(`user '${name}' does not exist`);
    user.certEpoch = newCertEpoch();
  });
}

/** Adds an access rule. */
export async function allowAccess(storage: HubStorage, rule: AccessRule): Promise<void> {
  if (!rule.users?.length && !rule.groups?.length) {
    throw new ConfigError("access allow needs --user or --group");
  }
  if (!rule.clusters?.length && rule.clusterSelector === undefined) {
    throw new ConfigError("access allow needs --clusters GLOB[,GLOB] or --cluster-selector SELECTOR");
  }
  if (rule.clusterSelector !== undefined) {
    if (!rule.clusterSelector.trim()) {
      throw new ConfigError("--cluster-selector is empty; use --clusters '*' to mean every cluster");
    }
    parseSelector(rule.clusterSelector);
  }
  for (const c of rule.clusters ?? []) {
    if (!/^[a-z0-9*?-]+$/.test(c)) {
      throw new ConfigError(`cluster pattern '${c}' may hold only a-z, 0-9, '-', '*', '?'`);
    }
  }
  await storage.registry.update((data) => void data.access.push(rule));
}

/** The hub's HTTPS base URL as users should see it. */
export function hubServerUrl(data: RegistryData, flag: string | undefined): string {
  if (flag) {
    if (!/^https:\/\/[^/]+\/?$/.test(flag)) {
      throw new ConfigError(`--server '${flag}' must be https://HOST[:PORT]`);
    }
    return flag.replace(/\/$/, "");
  }
  if (data.settings.publicUrl) {
    const u = new URL(data.settings.publicUrl);
    return `https://${u.host}`;
  }
  return `https://${hostname()}:8443`;
}

/** Default lifetime and upper bound of kubeconfig client certificates when the hub settings name none. */
export const defaultClientCertTtl = "8h";

/** The lifetime (ms) of a new client certificate: `ttlFlag` or the hub default, refused above the hub maximum. */
export function clientCertLifetime(data: RegistryData, ttlFlag: string | undefined): number {
  const max = parseDuration(
    data.settings.clientCertMaxTtl ?? defaultClientCertTtl,
    "settings.clientCertMaxTtl",
  );
  const ttl = ttlFlag !== undefined ? parseDuration(ttlFlag, "--ttl") : Math.min(
    max,
    parseDuration(data.settings.clientCertTtl ?? defaultClientCertTtl, "settings.clientCertTtl"),
  );
  if (ttl > max) {
    throw new ConfigError(
      `--ttl ${ttlFlag} is longer than this hub allows (${
        data.settings.clientCertMaxTtl ?? defaultClientCertTtl
      }; ` +
        "settings --client-cert-max-ttl changes it)",
    );
  }
  return ttl;
}

/** Sets the hub's client certificate lifetimes; returns the settings after the change. */
export async function setCertTtls(
  storage: HubStorage,
  ttl: string | undefined,
  maxTtl: string | undefined,
): Promise<RegistryData["settings"]> {
  if (ttl !== undefined) parseDuration(ttl, "--client-cert-ttl");
  if (maxTtl !== undefined) parseDuration(maxTtl, "--client-cert-max-ttl");
  return await storage.registry.update((data) => {
    if (ttl !== undefined) data.settings.clientCertTtl = ttl;
    if (maxTtl !== undefined) data.settings.clientCertMaxTtl = maxTtl;
    const s = data.settings;
    if (
      parseDuration(s.clientCertTtl ?? defaultClientCertTtl, "ttl") >
        parseDuration(s.clientCertMaxTtl ?? defaultClientCertTtl, "max")
    ) {
      throw new ConfigError(
        `client certificate lifetime ${s.clientCertTtl ?? defaultClientCertTtl} exceeds the maximum ` +
          `${s.clientCertMaxTtl ?? defaultClientCertTtl}`,
      );
    }
    return { ...data.settings };
  });
}

/**
 * A kubeconfig for `user` with a new client certificate (valid for `ttl`, or the hub default) and one
 * context per reachable cluster.
 */
export async function userKubeconfig(
  storage: HubStorage,
  user: string,
  serverFlag?: string,
  ttl?: string,
): Promise<string> {
  const data = await storage.registry.read();
  const validMs = clientCertLifetime(data, ttl);
  const record = data.users.find((u) => u.name === user);
  if (!record) throw new ConfigError(`user '${user}' does not exist (main_server.ts user add ${user})`);
  const clusters = reachableClusters({ user, groups: record.groups, via: "certificate" }, data);
  if (!clusters.length) {
    throw new ConfigError(
      `user '${user}' may reach no cluster yet (main_server.ts access allow --user ${user} --clusters '*')`,
    );
  }
  const ca = await storage.material.ca();
  const cert = await issueLeaf(ca, {
    commonName: user,
    organizations: record.groups,
    usage: "client",
    validMs,
    ...(record.certEpoch ? { serialPrefix: record.certEpoch } : {}),
  });
  return kubeconfigYaml(hubServerUrl(data, serverFlag), ca.cert, clusters, `tower-${user}`, {
    "client-certificate-data": btoa(cert.cert),
    "client-key-data": btoa(cert.key),
  });
}

/** A kubeconfig with one context per cluster (at `SERVER/clusters/NAME`), all using one user entry. */
function kubeconfigYaml(
  server: string,
  caCert: string,
  clusters: string[],
  userEntry: string,
  user: Record<string, unknown>,
): string {
  return YAML.stringify({
    apiVersion: "v1",
    kind: "Config",
    preferences: {},
    "current-context": clusters[0],
    clusters: clusters.map((c) => ({
      name: c,
      cluster: { server: `${server}/clusters/${c}`, "certificate-authority-data": btoa(caCert) },
    })),
    users: [{ name: userEntry, user }],
    contexts: clusters.map((c) => ({ name: c, context: { cluster: c, user: userEntry } })),
  });
}

/** Settings of a kubeconfig whose user logs in through an OpenID Provider (`kubeconfig --oidc`). */
export interface OidcKubeconfigOptions {
  issuer: string;
  clientId: string;
  /** Path of the issuer's CA on the user's machine, passed to `login --ca-file`. */
  caFile?: string | undefined;
  /** Groups the user will have: contexts are written for the clusters they may reach (all when none). */
  groups: string[];
  server?: string | undefined;
  /** Where `login` keeps tokens on the user's machine (its only write permission). */
  cacheDir: string;
  flow: "browser" | "device";
  /** The deno executable and main_server.ts the plugin runs (default: this deno and this checkout). */
  deno?: string;
  mainScript?: string;
}

/**
 * A kubeconfig whose user runs `main_server.ts login` as a kubectl exec credential plugin (with the
 * `client` permission set and write access to the token cache only), one context per cluster that the
 * given groups may reach.
 */
export async function oidcKubeconfig(storage: HubStorage, o: OidcKubeconfigOptions): Promise<string> {
  const data = await storage.registry.read();
  const clusters = o.groups.length
    ? reachableClusters({ user: "", groups: o.groups, via: "oidc" }, data)
    : data.clusters.map((c) => c.name);
  if (!clusters.length) {
    throw new ConfigError(
      o.groups.length
        ? `groups ${o.groups.join(", ")} may reach no cluster (access allow --group G --clusters GLOB)`
        : "the hub has no clusters yet",
    );
  }
  const ca = await storage.material.ca();
  const server = hubServerUrl(data, o.server);
  const main = o.mainScript ?? new URL("../../main_server.ts", import.meta.url).pathname;
  const config = new URL("../../deno.json", import.meta.url).pathname;
  return kubeconfigYaml(server, ca.cert, clusters, "tower-oidc", {
    exec: {
      apiVersion: "client.authentication.k8s.io/v1",
      command: o.deno ?? Deno.execPath(),
      args: [
        "run",
        `--config=${config}`,
        "-P=client",
        `--allow-write=${o.cacheDir}`,
        "--no-prompt",
        main,
        "login",
        `--issuer=${o.issuer}`,
        `--client-id=${o.clientId}`,
        ...(o.caFile ? [`--ca-file=${o.caFile}`] : []),
        `--cache-dir=${o.cacheDir}`,
        `--flow=${o.flow}`,
      ],
      env: [{ name: "NO_COLOR", value: "1" }],
      interactiveMode: "IfAvailable",
      provideClusterInfo: false,
    },
  });
}
