/**
 * Where a channel to a cluster's endpoint comes from: an agent session on this replica when it holds a
 * suitable one, else a peer replica that does (peer_channels.ts). Forwards and LoadBalancer ports open
 * their channels here, so every replica can serve every cluster.
 * @module
 */

import { type ClusterSessions, NoAgentError } from "./cluster_sessions.ts";
import type { PeerChannels, RoutedChannel } from "./peer_channels.ts";
import { acceptsMode } from "./peer_routes.ts";

/** Opens channels locally or through peers. */
export class ChannelRouter {
  readonly #sessions: ClusterSessions;
  readonly #peers: PeerChannels | undefined;

  /** Without `peers` (no peer link), only this replica's sessions are used. */
  constructor(sessions: ClusterSessions, peers?: PeerChannels) {
    this.#sessions = sessions;
    this.#peers = peers;
  }

  /** Whether this replica has peers (a peer link). */
  get peered(): boolean {
    return this.#peers !== undefined;
  }

  /**
   * Whether a channel's agent session (on this replica) carries clearly more channels to `endpoint` than
   * another that accepts `mode` (see ClusterSessions.crowded). A relayed channel never is: its peer chose.
   */
  crowded(c: RoutedChannel, endpoint: string, mode?: string): boolean {
    return c.agent !== undefined &&
      this.#sessions.crowded(c.agent, endpoint, mode ? acceptsMode(mode) : undefined);
  }

  /**
   * A channel to `endpoint` of `cluster` (on an agent accepting `mode`, when given). Rejects with
   * NoAgentError when no replica can open one, or with UnsuitableAgentError (message `unsuitable`, `%s`
   * standing for the cluster) when this replica's agents publish the endpoint but none accepts `mode`
   * and no peer could help either.
   */
  async openChannel(
    cluster: string,
    endpoint: string,
    mode?: string,
    unsuitable?: string,
  ): Promise<RoutedChannel> {
    const suits = mode ? acceptsMode(mode) : undefined;
    if (!this.#peers || this.#sessions.pick(cluster, endpoint, undefined, suits)) {
      try {
        return await this.#sessions.openChannel(cluster, endpoint, suits, unsuitable);
      } catch (e) {
        if (!this.#peers || !(e instanceof NoAgentError)) throw e;
      }
    }
    try {
      return await this.#peers.open(cluster, endpoint, mode);
    } catch (e) {
      // Say why this replica's own agents would not do, when they are the reason.
      if (e instanceof NoAgentError && this.#sessions.of(cluster).length > 0) {
        this.#sessions.requireAgent(cluster, endpoint, suits, unsuitable);
      }
      throw e;
    }
  }
}
