/**
 * Channels to a cluster's endpoints through another replica. When this replica holds no suitable agent
 * session of a cluster, it asks the live peers which of them do (route lookups, peer_routes.ts), then
 * asks one of them over the peer link to open a channel to the endpoint on one of its agents and relay
 * the bytes. The peer is only a relay: whatever runs over the channel (HTTP with the identity headers
 * this replica set after authenticating, authorizing and auditing the user; an exec stream; a
 * LoadBalancer connection) is written here and read by the agent.
 *
 * Wire: `GET /peer/v1/channel?cluster=C&endpoint=E[&mode=M]` with `Upgrade: tower-channel.v1`, answered
 * `101`, then the channel's bytes framed as in eof_framing.ts (Deno's TLS sockets cannot half-close).
 * @module
 */

import tls from "node:tls";
import { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { isClusterName, isEndpointName } from "../config/mod.ts";
import { type AgentConnection, type EofFramed, eofFramed, splice } from "../tunnel/mod.ts";
import { type ClusterSessions, NoAgentError } from "./cluster_sessions.ts";
import { peerClientTls, type PeerIdentity, type PeerUpgradeHandler } from "./peer_link.ts";
import { acceptsMode, type PeerRoutes } from "./peer_routes.ts";
import type { PeerForwardResult } from "./hub_metrics.ts";

/** Path of channel requests on the peer link. */
export const peerChannelPath = "/peer/v1/channel";
/** Upgrade token of a relayed channel. */
export const peerChannelUpgrade = "tower-channel.v1";

/** Longest response head a peer may send before its 101. */
const maxHeadBytes = 16 * 1024;
/** A peer that has not answered a channel request by then is skipped. */
const peerDialTimeoutMs = 5000;

/** A channel and what carries it: a local agent session, or the replica that relays it. */
export interface RoutedChannel {
  channel: Duplex;
  /** The local agent session, when this replica holds it. */
  agent?: AgentConnection;
  /** The replica that relays the channel to its agent, when this one does not hold one. */
  via?: string;
}

/**
 * The peer-link upgrade route that opens a channel on one of this replica's agents and relays it;
 * `relaying` gets each relayed channel (a drain winds them down at its end).
 */
export function relayPeerChannels(
  sessions: ClusterSessions,
  log: Logger,
  relaying?: (channel: EofFramed) => void,
): PeerUpgradeHandler {
  return (req, socket, head, peer) => {
    const url = new URL(req.url ?? "/", "https://peer.invalid");
    if (url.pathname !== peerChannelPath) return false;
    const cluster = url.searchParams.get("cluster") ?? "";
    const endpoint = url.searchParams.get("endpoint") ?? "";
    const mode = url.searchParams.get("mode");
    const refuse = (status: number, reason: string) =>
      socket.end(
        `HTTP/1.1 ${status} Refused\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${
          Buffer.byteLength(reason) + 1
        }\r\n\r\n${reason}\n`,
      );
    if (
      (req.headers.upgrade ?? "").toLowerCase() !== peerChannelUpgrade || !isClusterName(cluster) ||
      !isEndpointName(endpoint) || (mode !== null && mode !== "impersonate" && mode !== "passthrough")
    ) {
      refuse(400, "channel requests look like ?cluster=NAME&endpoint=NAME[&mode=MODE] with Upgrade");
      return true;
    }
    const started = performance.now();
    sessions.openChannel(cluster, endpoint, mode ? acceptsMode(mode) : undefined).then(
      ({ channel, agent }) => {
        if (socket.destroyed) return void channel.destroy();
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${peerChannelUpgrade}\r\n\r\n`,
        );
        if (head.length) socket.unshift(head);
        const framed = eofFramed(socket);
        relaying?.(framed);
        // The agent's channel ending (EOF) or failing (its agent died) ends or destroys `framed`, never
        // winds it down: only a drain does (relaying).
        splice(framed, channel, (stats) =>
          log.info("peer channel relayed", {
            peer,
            cluster,
            endpoint,
            agent: agent.id,
            bytesIn: stats.aToB,
            bytesOut: stats.bToA,
            durationMs: Math.round(performance.now() - started),
            ...(stats.error ? { error: stats.error.message } : {}),
          }));
      },
      (e: Error) => {
        log.info("peer channel refused", { peer, cluster, endpoint, error: e.message });
        refuse(503, e.message);
      },
    );
    return true;
  };
}

/** Settings of {@link PeerChannels}. */
export interface PeerChannelsOptions {
  identity: PeerIdentity;
  routes: PeerRoutes;
  /** Called once per {@link PeerChannels.open} with its result (the metrics count it). */
  counted?: (result: PeerForwardResult) => void;
  log: Logger;
}

/** Opens channels through peers that hold a suitable agent session. */
export class PeerChannels {
  readonly #opts: PeerChannelsOptions;

  constructor(opts: PeerChannelsOptions) {
    this.#opts = opts;
  }

  /**
   * A channel to `endpoint` of `cluster` through some peer; rejects with NoAgentError when none can.
   * When every holder of a cached answer fails (one died since), the peers are asked once more.
   */
  async open(cluster: string, endpoint: string, mode?: string): Promise<RoutedChannel> {
    const tried = new Set<string>();
    let lastError: Error | undefined;
    for (let round = 0; round < 2; round++) {
      const holders = (await this.#opts.routes.holders(cluster, endpoint, mode)).filter((h) =>
        !tried.has(h.replica)
      );
      if (round > 0 && !holders.length) break;
      for (const h of holders) {
        tried.add(h.replica);
        try {
          const channel = await dialChannel(
            this.#opts.log,
            this.#opts.identity,
            h.replica,
            h.address,
            cluster,
            endpoint,
            mode,
          );
          this.#opts.counted?.("ok");
          return { channel, via: h.replica };
        } catch (e) {
          lastError = e as Error;
          // The answer is stale (the holder died or lost the agent): ask again.
          this.#opts.routes.forget(cluster, endpoint, mode);
          this.#opts.log.info("peer channel failed", {
            peer: h.replica,
            cluster,
            endpoint,
            error: lastError.message,
          });
        }
      }
      if (!lastError) break;
    }
    this.#opts.counted?.(lastError ? "failed" : "no_agent");
    throw new NoAgentError(
      lastError
        ? `no replica could open a channel to '${endpoint}' of cluster '${cluster}': ${lastError.message}`
        : `cluster '${cluster}' has no connected agent on any hub replica`,
    );
  }
}

/** Dials `replica` at `address`, asks for a channel, and resolves with it once the peer answered 101. */
function dialChannel(
  log: Logger,
  identity: PeerIdentity,
  replica: string,
  address: string,
  cluster: string,
  endpoint: string,
  mode: string | undefined,
): Promise<Duplex> {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(colon + 1));
  const query = new URLSearchParams({ cluster, endpoint, ...(mode ? { mode } : {}) });
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      ...(peerClientTls(identity, replica) as tls.ConnectionOptions),
    });
    socket.setNoDelay(true);
    const fail = (e: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new Error(`peer ${replica} did not answer in time`)),
      peerDialTimeoutMs,
    );
    const closedEarly = () => fail(new Error(`peer ${replica} closed the connection`));
    socket.once("error", fail);
    socket.once("close", closedEarly);
    socket.once("secureConnect", () => {
      socket.write(
        `GET ${peerChannelPath}?${query} HTTP/1.1\r\nHost: ${replica}\r\nConnection: Upgrade\r\n` +
          `Upgrade: ${peerChannelUpgrade}\r\n\r\n`,
      );
    });
    let buf = Buffer.alloc(0);
    const onData = (chunk: Uint8Array) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > maxHeadBytes) fail(new Error(`peer ${replica} sent an oversized answer`));
        return;
      }
      socket.off("data", onData);
      const headText = buf.subarray(0, end).toString("latin1");
      const rest = buf.subarray(end + 4);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(headText)?.[1] ?? 0);
      if (status !== 101) {
        const reason = rest.toString("utf8").trim().slice(0, 300) || `status ${status}`;
        return fail(new Error(`peer ${replica}: ${reason}`));
      }
      clearTimeout(timer);
      socket.off("error", fail);
      socket.off("close", closedEarly);
      socket.pause();
      if (rest.length) socket.unshift(rest);
      const channel = eofFramed(socket);
      // A channel may wait unused (a reserve of open channels) when its peer dies: the error must not
      // go unhandled and end this process. Its user sees the channel close (and the error, if listening).
      channel.on("error", (e: Error) => log.debug("peer channel ended", { peer: replica, error: e.message }));
      resolve(channel);
    };
    socket.on("data", onData);
  });
}
