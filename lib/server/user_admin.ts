/**
 * Admin commands for hub users and access rules, and kubeconfigs for users: one context per cluster the
 * user may reach, pinned to the hub CA, with a fresh client certificate from the hub CA.
 * @module
 */

import { hostname } from "node:os";
import YAML from "yaml";
import { ConfigError } from "../config/mod.ts";
import {
  type AccessRule,
  extraProblem,
  hashToken,
  isUserName,
  newToken,
  parseSelector,
  type RegistryData,
} from "../registry/mod.ts";
import { loadCa, openDataDir } from "./data_dir.ts";
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
  dataDir: string,
  name: string,
  groups: string[],
  withToken: boolean,
  extra: Record<string, string[]> = {},
): Promise<{ token: string | undefined }> {
  checkUserName(name);
  for (const g of groups) checkUserName(g, "group name");
  const problem = extraProblem(extra);
  if (problem) throw new ConfigError(problem);
  const registry = await openDataDir(dataDir);
  const token = withToken ? newToken() : undefined;
  await registry.update((data) => {
    if (data.users.some((u) => u.name === name)) throw new ConfigError(`user '${name}' already exists`);
    data.users.push({
      name,
      groups,
      createdAt: new Date().toISOString(),
      ...(token ? { tokenHash: hashToken(token) } : {}),
      ...(Object.keys(extra).length ? { extra } : {}),
    });
  });
  return { token };
}

/** Removes a user; their token and certificates stop working at once. */
export async function removeUser(dataDir: string, name: string): Promise<void> {
  const registry = await openDataDir(dataDir);
  await registry.update((data) => {
    const i = data.users.findIndex((u) => u.name === name);
    if (i < 0) throw new ConfigError(`user '${name}' does not exist`);
    data.users.splice(i, 1);
  });
}

/** Adds an access rule. */
export async function allowAccess(dataDir: string, rule: AccessRule): Promise<void> {
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
  const registry = await openDataDir(dataDir);
  await registry.update((data) => void data.access.push(rule));
}

/** The registry as it is (for `user list` and `access list`). */
export async function readRegistry(dataDir: string): Promise<RegistryData> {
  return await (await openDataDir(dataDir)).read();
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

/** A kubeconfig for `user` with a new client certificate and one context per reachable cluster. */
export async function userKubeconfig(dataDir: string, user: string, serverFlag?: string): Promise<string> {
  const data = await readRegistry(dataDir);
  const record = data.users.find((u) => u.name === user);
  if (!record) throw new ConfigError(`user '${user}' does not exist (main_server.ts user add ${user})`);
  const clusters = reachableClusters({ user, groups: record.groups, via: "certificate" }, data);
  if (!clusters.length) {
    throw new ConfigError(
      `user '${user}' may reach no cluster yet (main_server.ts access allow --user ${user} --clusters '*')`,
    );
  }
  const ca = await loadCa(dataDir);
  const cert = await issueLeaf(ca, {
    commonName: user,
    organizations: record.groups,
    usage: "client",
    validDays: 365,
  });
  const server = hubServerUrl(data, serverFlag);
  const b64 = (s: string) => btoa(s);
  const userEntry = `tower-${user}`;
  return YAML.stringify({
    apiVersion: "v1",
    kind: "Config",
    preferences: {},
    "current-context": clusters[0],
    clusters: clusters.map((c) => ({
      name: c,
      cluster: { server: `${server}/clusters/${c}`, "certificate-authority-data": b64(ca.cert) },
    })),
    users: [{
      name: userEntry,
      user: { "client-certificate-data": b64(cert.cert), "client-key-data": b64(cert.key) },
    }],
    contexts: clusters.map((c) => ({ name: c, context: { cluster: c, user: userEntry } })),
  });
}
