/**
 * What one hub replica knows only by itself: its agent sessions, open streams and LoadBalancer flows.
 * The admin API and the status page merge a list of these; a single hub lists its own, and several
 * replicas list every peer's too (see `SnapshotSource`).
 * @module
 */

import type { ClusterSessions } from "./cluster_sessions.ts";
import type { LbManager } from "./lb_manager.ts";

/** One agent session as the admin API shows it. */
export interface AgentView {
  /** The replica that holds the session. */
  replica: string;
  id: string;
  remoteAddress: string;
  /** When the session started (ISO 8601). */
  since: string;
  /** The version the agent reported in its hello. */
  version: string | null;
  openChannels: number;
  bytesIn: number;
  bytesOut: number;
  /** The agent has been silent for more than 1.5 keepalive intervals. */
  late: boolean;
}

/** One public LoadBalancer port as served by a replica. */
export interface LbPortView {
  replica: string;
  cluster: string;
  service: string;
  port: number;
  protocol: "TCP" | "UDP";
  publicPort: number;
  /** Open flows on this replica (TCP connections or UDP peers). */
  flows: number;
}

/** One replica's live state. */
export interface ReplicaSnapshot {
  replica: string;
  version: string;
  /** When the snapshot was taken (ISO 8601). */
  takenAt: string;
  /** Agent sessions by cluster name. */
  agents: Record<string, AgentView[]>;
  /** Long-running requests open now, by cluster label, then kind. */
  streams: Record<string, Record<string, number>>;
  lbPorts: LbPortView[];
  /** Requests in flight on this replica, and whether it is draining. */
  requests: ReplicaRequests;
}

/** Requests a replica is serving. */
export interface ReplicaRequests {
  draining: boolean;
  ordinary: number;
  longRunning: number;
}

/** Every live replica's snapshot, and the replicas that did not answer. */
export interface ReplicaSnapshots {
  snapshots: ReplicaSnapshot[];
  unreachable: string[];
}

/** Every replica's snapshot: the local one, plus each live peer's. */
export type SnapshotSource = () => Promise<ReplicaSnapshots>;

/** Whether `v` has a snapshot's shape (a peer's answer is checked before it is merged). */
export function isReplicaSnapshot(v: unknown): v is ReplicaSnapshot {
  const s = v as Partial<ReplicaSnapshot> | null;
  return typeof s === "object" && s !== null && typeof s.replica === "string" &&
    typeof s.version === "string" &&
    typeof s.takenAt === "string" && typeof s.agents === "object" && s.agents !== null &&
    Object.values(s.agents).every(Array.isArray) && typeof s.streams === "object" && s.streams !== null &&
    Array.isArray(s.lbPorts) && typeof s.requests === "object" && s.requests !== null;
}

/**
 * This replica's snapshot joined by each peer's, asked with `ask` (per peer, e.g. over its admin socket;
 * undefined or a throw: unreachable). A peer that answers slowly costs at most `ask`'s own timeout.
 */
export async function gatherSnapshots(
  own: ReplicaSnapshot,
  peers: string[],
  ask: (peer: string) => Promise<unknown>,
): Promise<ReplicaSnapshots> {
  const answers = await Promise.all(peers.map((p) => ask(p).catch(() => undefined)));
  const snapshots = [own];
  const unreachable: string[] = [];
  answers.forEach((a, i) => {
    if (isReplicaSnapshot(a) && a.replica === peers[i]) snapshots.push(a);
    else unreachable.push(peers[i]!);
  });
  return { snapshots, unreachable };
}

/** What a snapshot is read from. */
export interface SnapshotParts {
  replica: string;
  version: string;
  sessions: ClusterSessions;
  lb: LbManager | undefined;
  streams(): Promise<Record<string, Record<string, number>>>;
  requests(): ReplicaRequests;
}

/** Takes this replica's snapshot. */
export async function replicaSnapshot(p: SnapshotParts): Promise<ReplicaSnapshot> {
  const agents: Record<string, AgentView[]> = {};
  for (const [cluster, list] of Object.entries(p.sessions.summary())) {
    agents[cluster] = list.map((a) => ({
      replica: p.replica,
      id: a.id,
      remoteAddress: a.remoteAddress,
      since: a.since,
      version: typeof a.version === "string" ? a.version : null,
      openChannels: a.openChannels,
      bytesIn: a.bytesIn,
      bytesOut: a.bytesOut,
      late: a.late,
    }));
  }
  return {
    replica: p.replica,
    version: p.version,
    takenAt: new Date().toISOString(),
    agents,
    streams: await p.streams(),
    lbPorts: (p.lb?.ports() ?? []).map(({ alloc, flows }) => ({ replica: p.replica, ...alloc, flows })),
    requests: p.requests(),
  };
}
