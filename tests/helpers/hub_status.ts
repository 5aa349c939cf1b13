/**
 * The running hub's sessions, read as the admin commands read them (the admin API on a replica's admin
 * socket in the data dir), and waited on until they show something.
 * @module
 */

import { askAnyReplica } from "../../lib/server/admin_socket.ts";
import type { ClustersResponse } from "../../lib/server/admin_api.ts";
import { dataPaths } from "../../lib/server/mod.ts";

/** One agent session. */
export interface AgentStatus {
  id: string;
  replica: string;
  openChannels: number;
  late: boolean;
}

/** The sessions of each cluster, on every replica, and when the answering replica took them. */
export interface HubStatus {
  updatedAt: string;
  clusters: Record<string, AgentStatus[]>;
}

/** The hub's sessions as they are now; fails when no hub runs on the data dir. */
export async function readHubStatus(dataDir: string): Promise<HubStatus> {
  const live = await askAnyReplica(dataPaths(dataDir).adminSockets, "/api/tower/v1/clusters") as
    | ClustersResponse
    | undefined;
  if (!live) throw new Error(`no hub answers on the admin sockets of ${dataDir}`);
  return {
    updatedAt: live.replicas[0]?.takenAt ?? "",
    clusters: Object.fromEntries(live.clusters.map((c) => [c.name, c.agents])),
  };
}

/** Open channels of a cluster's agents, summed. */
export function openChannels(status: HubStatus, cluster: string): number {
  return (status.clusters[cluster] ?? []).reduce((n, a) => n + a.openChannels, 0);
}

/** How often {@link waitForHubStatus} asks (one in-process request on a Unix socket). */
const askEveryMs = 100;

/**
 * Asks the hub until its sessions make `check` return a value other than `undefined`, and returns that
 * value; `check` may keep state across calls. Fails after `ms`, naming `what` and the last status seen.
 */
export async function waitForHubStatus<T>(
  dataDir: string,
  what: string,
  check: (status: HubStatus) => T | undefined,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: HubStatus | undefined;
  for (;;) {
    try {
      last = await readHubStatus(dataDir);
      const got = check(last);
      if (got !== undefined) return got;
    } catch {
      // the hub is not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`hub status: not within ${ms} ms: ${what}; last status: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, askEveryMs));
  }
}
