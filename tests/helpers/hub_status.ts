/**
 * The hub's status file (`status.json` in its data dir, rewritten within 250 ms of any change to its
 * sessions, and every 5 s anyway), read as the admin commands read it, and waited on as it is rewritten.
 * @module
 */

import { join } from "node:path";

/** One agent session in the status file. */
export interface AgentStatus {
  id: string;
  openChannels: number;
  late: boolean;
}

/** The status file: the hub's pid, when it was written, and the sessions of each cluster. */
export interface HubStatus {
  pid: number;
  updatedAt: string;
  clusters: Record<string, AgentStatus[]>;
}

/** The status file as it is now. */
export async function readHubStatus(dataDir: string): Promise<HubStatus> {
  return JSON.parse(await Deno.readTextFile(join(dataDir, "status.json"))) as HubStatus;
}

/** Open channels of a cluster's agents, summed. */
export function openChannels(status: HubStatus, cluster: string): number {
  return (status.clusters[cluster] ?? []).reduce((n, a) => n + a.openChannels, 0);
}

/**
 * Waits until a version of the status file makes `check` return a value other than `undefined`, and
 * returns that value. `check` sees the current file first, then every rewrite (the data dir is watched),
 * so it may keep state across calls. Fails after `ms`, naming `what` and the last status seen.
 */
export async function waitForHubStatus<T>(
  dataDir: string,
  what: string,
  check: (status: HubStatus) => T | undefined,
  ms = 10_000,
): Promise<T> {
  const watcher = Deno.watchFs(dataDir, { recursive: false });
  let last: HubStatus | undefined;
  const timer = setTimeout(() => watcher.close(), ms);
  const attempt = async () => {
    try {
      last = await readHubStatus(dataDir);
    } catch {
      return undefined; // not written yet
    }
    return check(last);
  };
  try {
    let got = await attempt();
    if (got !== undefined) return got;
    for await (const event of watcher) {
      if (!event.paths.some((p) => p.endsWith("/status.json"))) continue;
      got = await attempt();
      if (got !== undefined) return got;
    }
    throw new Error(`hub status: not within ${ms} ms: ${what}; last status: ${JSON.stringify(last)}`);
  } finally {
    clearTimeout(timer);
    try {
      watcher.close();
    } catch {
      // already closed by the timer
    }
  }
}
