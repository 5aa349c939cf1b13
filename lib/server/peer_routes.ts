/**
 * Route lookups on the peer link: "do you hold an agent session of cluster C that publishes endpoint E
 * (and accepts auth mode M)?". Nothing about routes is stored or gossiped: the answer comes from the
 * holder's own live session table at the moment of asking, so it cannot outlive a dead replica.
 * @module
 */

import https from "node:https";
import { Buffer } from "node:buffer";
import type { Logger } from "../log/log.ts";
import { isClusterName, isEndpointName } from "../config/mod.ts";
import type { AgentConnection } from "../tunnel/mod.ts";
import type { ClusterSessions } from "./cluster_sessions.ts";
import type { ReplicaLease } from "../registry/mod.ts";
import { peerClientTls, type PeerIdentity, type PeerRequestHandler } from "./peer_link.ts";

/** Path of route lookups on the peer link. */
export const routeLookupPath = "/peer/v1/routes";

/** Path of the held-clusters lookup: every cluster a replica serves, in one answer. */
export const heldClustersPath = "/peer/v1/held";

/** A replica's answer to a held-clusters lookup. */
export interface HeldAnswer {
  replica: string;
  /**
   * Clusters with an agent session here that is not late and has published at least one endpoint (an
   * agent publishes everything right after it logs in, so such a session serves).
   */
  clusters: string[];
  draining: boolean;
}

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
export function acceptsMode(mode: string): (a: AgentConnection) => boolean {
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
    if (url.pathname === heldClustersPath && req.method === "GET") {
      const now = Date.now();
      const answer: HeldAnswer = {
        replica: replicaId,
        clusters: sessions.clusters().filter((c) =>
          sessions.of(c).some((a) => a.endpoints.size > 0 && !a.isLate(now))
        ),
        draining: draining(),
      };
      const body = JSON.stringify(answer);
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
      return true;
    }
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

/** A peer that holds a suitable agent session, as it answered. */
export interface RouteHolder {
  replica: string;
  /** `HOST:PORT` of its peer link. */
  address: string;
  agents: number;
  draining: boolean;
}

/** Settings of {@link PeerRoutes}. */
export interface PeerRoutesOptions {
  identity: PeerIdentity;
  /** Live peers (not this replica) with a peer address, from the leases. */
  peers(): ReplicaLease[];
  /** Longest held-clusters answer read from one peer; {@link maxHeldAnswerBytes} when absent. */
  maxHeldAnswerBytes?: number;
  log: Logger;
}

/** A positive answer is reused this long (an empty one a quarter of it); a failed channel forgets it. */
const answerTtlMs = 2000;
/** A peer that has not answered a lookup by then counts as not holding the cluster. */
const lookupTimeoutMs = 1000;
/** Longest lookup answer read. */
const maxAnswerBytes = 16 * 1024;
/**
 * Longest held-clusters answer read by default: 16 MiB is over 250,000 cluster names of the longest kind
 * (63 characters), far past the clusters one hub serves.
 */
const maxHeldAnswerBytes = 16 << 20;
/** A peer that has not answered a held-clusters lookup by then counts as holding nothing. */
const heldTimeoutMs = 5000;
/** Most cached answers; the oldest go first. */
const maxCachedAnswers = 4096;

/** Asks live peers which of them hold a cluster's agents, with a short cache and one lookup per key at a time. */
export class PeerRoutes {
  readonly #opts: PeerRoutesOptions;
  readonly #answers = new Map<string, { at: number; holders: Promise<RouteHolder[]> }>();

  constructor(opts: PeerRoutesOptions) {
    this.#opts = opts;
  }

  /** Peers holding a suitable agent of `cluster` publishing `endpoint`: not draining first, then most agents. */
  holders(cluster: string, endpoint: string, mode?: string): Promise<RouteHolder[]> {
    const key = `${cluster}|${endpoint}|${mode ?? ""}`;
    const now = performance.now();
    const cached = this.#answers.get(key);
    if (cached && now - cached.at < answerTtlMs) return cached.holders;
    const holders = this.#ask(cluster, endpoint, mode);
    this.#answers.delete(key);
    if (this.#answers.size >= maxCachedAnswers) this.#answers.delete(this.#answers.keys().next().value!);
    const entry = { at: now, holders };
    this.#answers.set(key, entry);
    // An empty answer is kept only briefly: an agent that just moved here should be found soon.
    void holders.then((list) => {
      if (!list.length && this.#answers.get(key) === entry) entry.at = now - answerTtlMs * 0.75;
    });
    return holders;
  }

  /**
   * Clusters that some live peer not draining serves now (see {@link HeldAnswer}): one lookup per peer,
   * not cached, so a drain can tell when its agents have all moved without asking once per cluster.
   */
  async clustersHeld(): Promise<Set<string>> {
    const answers = await this.#askEach(
      heldClustersPath,
      this.#opts.maxHeldAnswerBytes ?? maxHeldAnswerBytes,
      heldTimeoutMs,
      parseHeldAnswer,
      "held-clusters lookup failed",
    );
    const held = new Set<string>();
    for (const { answer } of answers) {
      if (!answer.draining) { for (const c of answer.clusters) held.add(c); }
    }
    return held;
  }

  /** Drops the cached answer for this key (its holder failed). */
  forget(cluster: string, endpoint: string, mode?: string): void {
    this.#answers.delete(`${cluster}|${endpoint}|${mode ?? ""}`);
  }

  async #ask(cluster: string, endpoint: string, mode?: string): Promise<RouteHolder[]> {
    const query = new URLSearchParams({ cluster, endpoint, ...(mode ? { mode } : {}) });
    const answers = await this.#askEach(
      `${routeLookupPath}?${query}`,
      maxAnswerBytes,
      lookupTimeoutMs,
      parseRouteAnswer,
      "route lookup failed",
      { cluster },
    );
    return answers
      .filter(({ answer }) => answer.agents > 0)
      .map(({ peer, answer }) => ({
        replica: peer.id,
        address: peer.peerAddress!,
        agents: answer.agents,
        draining: answer.draining,
      }))
      .sort((x, y) => Number(x.draining) - Number(y.draining) || y.agents - x.agents);
  }

  /**
   * One GET of `path` on every live peer with a peer address, at once. A peer that fails (unreachable,
   * too slow, an answer over `maxBytes` or of the wrong shape) is logged and left out, and so is an answer
   * that does not come from the replica the lease names (its certificate was checked for that name).
   */
  async #askEach<T extends { replica: string }>(
    path: string,
    maxBytes: number,
    timeoutMs: number,
    parse: (body: string) => T,
    failure: string,
    fields: Record<string, unknown> = {},
  ): Promise<{ peer: ReplicaLease; answer: T }[]> {
    const peers = this.#opts.peers().filter((p) => p.peerAddress);
    const answers = await Promise.all(
      peers.map((p) =>
        peerGet(this.#opts.identity, p.id, p.peerAddress!, path, maxBytes, timeoutMs).then(parse).catch(
          (e) => {
            this.#opts.log.info(failure, { peer: p.id, ...fields, error: (e as Error).message });
            return undefined;
          },
        )
      ),
    );
    const out: { peer: ReplicaLease; answer: T }[] = [];
    answers.forEach((answer, i) => {
      const peer = peers[i]!;
      if (answer && answer.replica === peer.id) out.push({ peer, answer });
    });
    return out;
  }
}

/** Checks the shape of a route answer. */
function parseRouteAnswer(body: string): RouteAnswer {
  const a = JSON.parse(body) as Partial<RouteAnswer>;
  if (typeof a.replica !== "string" || !Number.isInteger(a.agents) || typeof a.draining !== "boolean") {
    throw new Error("malformed route answer");
  }
  return a as RouteAnswer;
}

/** Checks the shape of a held-clusters answer. */
export function parseHeldAnswer(body: string): HeldAnswer {
  const a = JSON.parse(body) as Partial<HeldAnswer>;
  if (
    typeof a.replica !== "string" || typeof a.draining !== "boolean" || !Array.isArray(a.clusters) ||
    !a.clusters.every((c) => typeof c === "string")
  ) {
    throw new Error("malformed held-clusters answer");
  }
  return a as HeldAnswer;
}

/** One GET on one peer: the body of a 200 answer, at most `maxBytes`, within `timeoutMs` of silence. */
function peerGet(
  identity: PeerIdentity,
  replica: string,
  address: string,
  path: string,
  maxBytes: number,
  timeoutMs: number,
): Promise<string> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: address.slice(0, colon).replace(/^\[|\]$/g, ""),
      port: Number(address.slice(colon + 1)),
      path,
      agent: false,
      timeout: timeoutMs,
      ...peerClientTls(identity, replica),
    }, (res) => {
      const chunks: Uint8Array[] = [];
      let size = 0;
      res.on("data", (c: Uint8Array) => {
        chunks.push(c);
        size += c.length;
        if (size <= maxBytes) return;
        // Settled here: the rest of an answer already received may still end the response normally.
        reject(new Error(`answer over ${maxBytes} bytes`));
        req.destroy();
      });
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
        resolve(Buffer.concat(chunks, size).toString("utf8"));
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("peer lookup timed out")));
    req.on("error", reject);
    req.end();
  });
}
