/**
 * Admin commands on the hub's storage: add, list, remove clusters and rotate their tokens. They edit the
 * registry (file or host cluster); a running hub picks the change up within a second (and closes sessions
 * of removed clusters or rotated tokens). `list` reads the live status the hub(s) report (admin API).
 * @module
 */

import { hostname } from "node:os";
import { checkClusterName, ConfigError } from "../config/mod.ts";
import {
  applyLabelEdits,
  type AuthMode,
  hashToken,
  type LabelEdit,
  labelsProblem,
  newToken,
} from "../registry/mod.ts";
import type { HubAgents } from "../registry/k8s_cluster_status.ts";
import type { HubStorage } from "./hub_storage.ts";
import { agentManifest } from "./agent_manifest.ts";
import { askAnyReplica } from "./admin_socket.ts";
import type { ClustersResponse } from "./admin_api.ts";

/** What `cluster add` and `rotate-token` hand back to print. */
export interface IssuedToken {
  cluster: string;
  token: string;
  hubUrl: string;
  fingerprint: string;
  caFile: string;
  /** How to get the CA file when it is not a local file (the hub's CA in a host-cluster Secret). */
  caHint?: string;
  /** The agent command that reads the token from a file (`TOKEN_FILE` when none was written). */
  agentCommand: string;
  /** The same with the token in the environment (it may land in shell history). */
  agentEnvCommand: string;
  manifest: string;
  /** Where the token was written (mode 0600), when asked to. */
  tokenFile?: string;
}

async function issue(
  storage: HubStorage,
  cluster: string,
  token: string,
  hubUrlFlag?: string,
  tokenFile?: string,
): Promise<IssuedToken> {
  const { fingerprint } = await storage.material.hostKey();
  const ca = await storage.material.ca();
  const hubUrl = hubUrlFlag ?? (await storage.registry.read()).settings.publicUrl ??
    `wss://${hostname()}:8443/tunnel`;
  const k8s = storage.kubernetes;
  const caFile = k8s ? "hub-ca.crt" : storage.material.caLocation;
  const caHint = k8s
    ? `kubectl -n ${k8s.host.namespace} get secret tower-hub-ca -o jsonpath={.data.cert} | base64 -d > ${caFile}`
    : undefined;
  const flags = [
    `--hub ${hubUrl}`,
    `--cluster ${cluster}`,
    `--hub-fingerprint ${fingerprint}`,
    ...(hubUrl.startsWith("wss:") ? [`--ca-file ${caFile}`] : []),
    "--kubernetes",
  ];
  if (tokenFile) await writeTokenFile(tokenFile, token);
  const agentCommand = [
    "deno run -P=agent main_agent.ts",
    `--token-file ${tokenFile ?? "TOKEN_FILE"}`,
    ...flags,
  ]
    .join(" ");
  const agentEnvCommand = [`TOWER_TOKEN='${token}'`, "deno run -P=agent main_agent.ts", ...flags].join(" ");
  const manifest = agentManifest({
    cluster,
    hubUrl,
    fingerprint,
    token: tokenFile ? undefined : token,
    caPem: ca.cert,
  });
  return {
    cluster,
    token,
    hubUrl,
    fingerprint,
    caFile,
    ...(caHint ? { caHint } : {}),
    agentCommand,
    agentEnvCommand,
    manifest,
    ...(tokenFile ? { tokenFile } : {}),
  };
}

/** Writes a token to a file only its owner can read (an existing file is narrowed to 0600 first). */
async function writeTokenFile(path: string, token: string): Promise<void> {
  try {
    await Deno.chmod(path, 0o600);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.writeTextFile(path, token + "\n", { mode: 0o600 });
}

function checkHubUrl(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  if (!/^wss?:\/\/[^/]+/.test(url)) throw new ConfigError(`--hub-url '${url}' must be a ws:// or wss:// URL`);
  return url;
}

/** Options of `cluster add`. */
export interface ClusterOptions {
  hubUrl?: string | undefined;
  mode?: AuthMode | undefined;
  port?: number | undefined;
  /** Labels for access rules' cluster selectors. */
  labels?: Record<string, string> | undefined;
  /** Write the token to this file (mode 0600) instead of printing it. */
  tokenFile?: string | undefined;
}

/** Adds a cluster and returns its new token (shown once) with ready-to-use agent instructions. */
export async function addCluster(
  storage: HubStorage,
  name: string,
  opts: ClusterOptions = {},
): Promise<IssuedToken> {
  const { hubUrl, mode, port, labels = {} } = opts;
  checkClusterName(name);
  checkHubUrl(hubUrl);
  const problem = labelsProblem(labels);
  if (problem) throw new ConfigError(problem);
  const token = newToken();
  await storage.registry.update((data) => {
    if (data.clusters.some((c) => c.name === name)) {
      throw new ConfigError(
        `cluster '${name}' already exists (use 'cluster rotate-token ${name}' for a new token)`,
      );
    }
    if (port && data.clusters.some((c) => c.port === port)) {
      throw new ConfigError(`port ${port} is taken by another cluster`);
    }
    data.clusters.push({
      name,
      tokenHash: hashToken(token),
      createdAt: new Date().toISOString(),
      ...(mode ? { mode } : {}),
      ...(port ? { port } : {}),
      ...(Object.keys(labels).length ? { labels } : {}),
    });
    if (hubUrl) data.settings.publicUrl = hubUrl;
  });
  return await issue(storage, name, token, hubUrl, opts.tokenFile);
}

/** Replaces a cluster's token; sessions that used the old one are closed by the hub. */
export async function rotateToken(
  storage: HubStorage,
  name: string,
  tokenFile?: string,
): Promise<IssuedToken> {
  checkClusterName(name);
  const token = newToken();
  await storage.registry.update((data) => {
    const c = data.clusters.find((x) => x.name === name);
    if (!c) throw new ConfigError(`cluster '${name}' does not exist`);
    c.tokenHash = hashToken(token);
    c.tokenRotatedAt = new Date().toISOString();
  });
  return await issue(storage, name, token, undefined, tokenFile);
}

/**
 * Sets and removes labels of a cluster and returns its labels after the change. A running hub applies
 * access rules with the new labels from its next request on.
 */
export async function labelCluster(
  storage: HubStorage,
  name: string,
  edits: LabelEdit[],
): Promise<Record<string, string>> {
  checkClusterName(name);
  if (!edits.length) throw new ConfigError("cluster label needs at least one KEY=VALUE or KEY-");
  return await storage.registry.update((data) => {
    const c = data.clusters.find((x) => x.name === name);
    if (!c) throw new ConfigError(`cluster '${name}' does not exist`);
    const labels = applyLabelEdits(c.labels ?? {}, edits);
    const problem = labelsProblem(labels);
    if (problem) throw new ConfigError(`cluster '${name}': ${problem}`);
    if (Object.keys(labels).length) c.labels = labels;
    else delete c.labels;
    return labels;
  });
}

/** Removes a cluster; its live sessions are closed by the hub at once. */
export async function removeCluster(storage: HubStorage, name: string): Promise<void> {
  checkClusterName(name);
  await storage.registry.update((data) => {
    const i = data.clusters.findIndex((c) => c.name === name);
    if (i < 0) throw new ConfigError(`cluster '${name}' does not exist`);
    data.clusters.splice(i, 1);
  });
}

/** One row of `cluster list`. */
export interface ClusterRow {
  name: string;
  labels: Record<string, string>;
  agents: number;
  since: string | undefined;
  /** Bytes through the cluster's sessions (file registry only: the admin API has them). */
  bytesIn?: number;
  bytesOut?: number;
}

/** Clusters with their live sessions, as last reported by the running hub(s). */
export async function listClusters(
  storage: HubStorage,
): Promise<{ hubRunning: boolean; rows: ClusterRow[] }> {
  const data = await storage.registry.read();
  const k8s = storage.kubernetes;
  if (k8s) {
    // Hub replicas keep their agent counts in each Cluster's status.
    const rows = data.clusters.map((c) => {
      const hubs = (k8s.registry.clusterObject(c.name)?.status?.hubs ?? []) as HubAgents[];
      return {
        name: c.name,
        labels: c.labels ?? {},
        agents: hubs.reduce((n, h) => n + h.agents, 0),
        since: hubs.map((h) => h.since).filter((s): s is string => !!s).sort()[0],
      };
    });
    return { hubRunning: true, rows };
  }
  // A file registry: ask a running replica's admin API (it gathers every replica's agents).
  const live = await askAnyReplica(storage.dataDir.paths.adminSockets, "/api/tower/v1/clusters") as
    | ClustersResponse
    | undefined;
  const agentsOf = new Map((live?.clusters ?? []).map((c) => [c.name, c.agents]));
  const rows = data.clusters.map((c) => {
    const agents = agentsOf.get(c.name) ?? [];
    return {
      name: c.name,
      labels: c.labels ?? {},
      agents: agents.length,
      since: agents.map((a) => a.since).sort()[0],
      bytesIn: agents.reduce((n, a) => n + a.bytesIn, 0),
      bytesOut: agents.reduce((n, a) => n + a.bytesOut, 0),
    };
  });
  return { hubRunning: live !== undefined, rows };
}
