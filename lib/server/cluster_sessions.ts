/**
 * Live agent sessions per cluster, and the choice of which one carries a new channel: a healthy agent
 * (keepalive not late) with the fewest open channels.
 * @module
 */

import type { Duplex } from "node:stream";
import type { AgentConnection } from "../tunnel/mod.ts";

/** No agent of the cluster can take the channel. */
export class NoAgentError extends Error {
  override name = "NoAgentError";
}

/** Agents are connected, but none suits the request (e.g. none allows its auth mode). */
export class UnsuitableAgentError extends Error {
  override name = "UnsuitableAgentError";
}

/** Summary of one agent session, for `cluster list` and the status file. */
export interface AgentSummary {
  id: string;
  remoteAddress: string;
  since: string;
  version: unknown;
  openChannels: number;
  bytesIn: number;
  bytesOut: number;
  late: boolean;
}

/** All agent sessions of all clusters on this hub. */
export class ClusterSessions {
  readonly #byCluster = new Map<string, Set<AgentConnection>>();
  readonly #channelOpened: (seconds: number, ok: boolean) => void;

  /** `channelOpened` hears how long each agent took to accept or refuse a channel (for metrics). */
  constructor(opts: { channelOpened?: (seconds: number, ok: boolean) => void } = {}) {
    this.#channelOpened = opts.channelOpened ?? (() => {});
  }

  /** Registers a session; it is dropped by itself when it closes. */
  add(agent: AgentConnection): void {
    let set = this.#byCluster.get(agent.cluster);
    if (!set) this.#byCluster.set(agent.cluster, set = new Set());
    set.add(agent);
    agent.onClose(() => {
      set.delete(agent);
      if (set.size === 0 && this.#byCluster.get(agent.cluster) === set) this.#byCluster.delete(agent.cluster);
    });
  }

  /** Sessions of `cluster` (open ones only). */
  of(cluster: string): AgentConnection[] {
    return [...(this.#byCluster.get(cluster) ?? [])].filter((a) => !a.closed);
  }

  /** Names of clusters with at least one session. */
  clusters(): string[] {
    return [...this.#byCluster.keys()];
  }

  /** Closes every session of `cluster`. */
  closeCluster(cluster: string, reason: string): number {
    const list = this.of(cluster);
    for (const a of list) a.close(reason);
    return list.length;
  }

  /** Closes all sessions. */
  closeAll(reason: string): void {
    for (const c of this.clusters()) this.closeCluster(c, reason);
  }

  /** The agent that should carry the next channel to `endpoint`, or undefined. */
  pick(
    cluster: string,
    endpoint: string,
    exclude?: Set<AgentConnection>,
    suits: (a: AgentConnection) => boolean = () => true,
  ): AgentConnection | undefined {
    const now = Date.now();
    let best: AgentConnection | undefined;
    let bestLate = true;
    for (const a of this.of(cluster)) {
      if (!a.endpoints.has(endpoint) || exclude?.has(a) || !suits(a)) continue;
      const late = a.isLate(now);
      // A late agent is only a last resort.
      if (!best || (bestLate && !late) || (late === bestLate && a.openChannels < best.openChannels)) {
        best = a;
        bestLate = late;
      }
    }
    return best;
  }

  /**
   * Whether `agent` holds more than one channel more than the agent {@link pick} would choose now. A
   * kept-alive connection on a crowded agent is closed rather than reused, so the next connection goes to
   * the other: without it, an agent that joins later (or comes back) would get no requests while the
   * others' kept-alive connections stay busy.
   */
  crowded(agent: AgentConnection, endpoint: string, suits?: (a: AgentConnection) => boolean): boolean {
    const best = this.pick(agent.cluster, endpoint, undefined, suits);
    return best !== undefined && best !== agent && agent.openChannels > best.openChannels + 1;
  }

  /**
   * Opens a channel to `endpoint` on some agent of `cluster` that `suits`, trying the next best agent
   * when one refuses (e.g. it could not dial). Rejects with NoAgentError when none can.
   */
  async openChannel(
    cluster: string,
    endpoint: string,
    suits?: (a: AgentConnection) => boolean,
    unsuitable = "no connected agent of cluster '%s' suits this request",
  ): Promise<{ channel: Duplex; agent: AgentConnection }> {
    const tried = new Set<AgentConnection>();
    let lastError: Error | undefined;
    for (;;) {
      const agent = this.pick(cluster, endpoint, tried, suits);
      if (!agent) {
        if (lastError) throw new NoAgentError(lastError.message);
        this.requireAgent(cluster, endpoint, suits, unsuitable);
        throw new NoAgentError(`no agent of cluster '${cluster}' can take a channel to '${endpoint}'`);
      }
      tried.add(agent);
      const started = performance.now();
      try {
        const channel = await agent.openChannel(endpoint);
        this.#channelOpened((performance.now() - started) / 1000, true);
        return { channel, agent };
      } catch (e) {
        this.#channelOpened((performance.now() - started) / 1000, false);
        lastError = e as Error;
      }
    }
  }

  /**
   * Throws NoAgentError when no agent of `cluster` publishes `endpoint`, UnsuitableAgentError when some
   * do but none `suits`; returns otherwise.
   */
  requireAgent(
    cluster: string,
    endpoint: string,
    suits?: (a: AgentConnection) => boolean,
    unsuitable = "no connected agent of cluster '%s' suits this request",
  ): void {
    if (this.pick(cluster, endpoint, undefined, suits)) return;
    const all = this.of(cluster);
    if (all.length === 0) throw new NoAgentError(`cluster '${cluster}' has no connected agent`);
    if (!all.some((a) => a.endpoints.has(endpoint))) {
      throw new NoAgentError(`no agent of cluster '${cluster}' publishes endpoint '${endpoint}'`);
    }
    throw new UnsuitableAgentError(unsuitable.replace("%s", cluster));
  }

  /** Summaries of every session, by cluster. */
  summary(): Record<string, AgentSummary[]> {
    const out: Record<string, AgentSummary[]> = {};
    const now = Date.now();
    for (const cluster of this.clusters()) {
      out[cluster] = this.of(cluster).map((a) => {
        const b = a.bytes();
        return {
          id: a.id,
          remoteAddress: a.remoteAddress,
          since: a.since.toISOString(),
          version: a.hello.version,
          openChannels: a.openChannels,
          bytesIn: b.read,
          bytesOut: b.written,
          late: a.isLate(now),
        };
      });
    }
    return out;
  }
}
