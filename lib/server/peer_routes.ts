/**
 * Route lookups on the peer link: "do you hold an agent session of cluster C that publishes endpoint E
 * (and accepts auth mode M)?". Nothing about routes is stored or gossiped: the answer comes from the
 * holder's own live session table at the moment of asking, so it cannot outlive a dead replica.
 * @module
 */

import { Buffer } from "node:buffer";
import type { Logger } from "../log/log.ts";
import { isClusterName, isEndpointName } from "../config/mod.ts";
import type { AgentConnection } from "../tunnel/mod.ts";
import type { ClusterSessions } from "./cluster_sessions.ts";
import type { PeerRequestHandler } from "./peer_link.ts";

/** Path of route lookups on the peer link. */
export const routeLookupPath = "/peer/v1/routes";

/** A replica's answer to a route lookup. */
export interface RouteAnswer {
  replica: string;
  cluster: string;
  endpoint: string;
  /** Agents of the cluster on this replica that publish the endpoint (and accept the mode), not late. */
  agents: number;
  /** A draining replica still answers, so peers can reach agents that have not moved yet; others first. */
  draining: boolean;
}

/** Whether an agent accepts requests in `mode` (agents that predate modes accept impersonation only). */
function acceptsMode(mode: string): (a: AgentConnection) => boolean {
  return (a) => {
    const modes = a.hello.authModes;
    return Array.isArray(modes) ? modes.includes(mode) : mode === "impersonate";
  };
}

/** The peer-link route that answers route lookups from this replica's sessions. */
export function answerRouteLookups(
  sessions: ClusterSessions,
  replicaId: string,
  draining: () => boolean,
  log: Logger,
): PeerRequestHandler {
  return (req, res, peer) => {
    const url = new URL(req.url ?? "/", "https://peer.invalid");
    if (url.pathname !== routeLookupPath) return false;
    const cluster = url.searchParams.get("cluster") ?? "";
    const endpoint = url.searchParams.get("endpoint") ?? "";
    const mode = url.searchParams.get("mode");
    if (
      req.method !== "GET" || !isClusterName(cluster) || !isEndpointName(endpoint) ||
      (mode !== null && mode !== "impersonate" && mode !== "passthrough")
    ) {
      log.warn("malformed route lookup", { peer, url: req.url?.slice(0, 200) });
      res.writeHead(400, { "content-type": "text/plain" }).end(
        "GET ?cluster=NAME&endpoint=NAME[&mode=MODE]\n",
      );
      return true;
    }
    const suits = mode ? acceptsMode(mode) : () => true;
    const now = Date.now();
    const agents = sessions.of(cluster).filter((a) =>
      a.endpoints.has(endpoint) && suits(a) && !a.isLate(now)
    );
    const answer: RouteAnswer = {
      replica: replicaId,
      cluster,
      endpoint,
      agents: agents.length,
      draining: draining(),
    };
    const body = JSON.stringify(answer);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
    return true;
  };
}
