/**
 * The hub's Kubernetes API route: `/clusters/NAME/…` (or a cluster's dedicated port) to that cluster's
 * kube-apiserver through an agent's `kubernetes` endpoint. Wraps the generic upgrade-aware proxy with
 * routing, authentication, hub-side authorization, identity headers and audit.
 * @module
 */

import http from "node:http";
import { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { isClusterName } from "../config/mod.ts";
import type { AuthMode, ClusterRecord, RegistryData } from "../registry/mod.ts";
import { isDiscoveryPath, kubeStatusText, kubeVerb, refuseWithStatus, warningValue } from "../kube/status.ts";
import { kubernetesEndpoint, serviceEndpointName } from "../kube/endpoint_names.ts";
import {
  BodyRelay,
  endToEndHeaders,
  exchange,
  isUpgrade,
  type ProxyOutcome,
  proxyRequest,
  proxyUpgrade,
  relayHead,
  type Upstream,
} from "../proxy/mod.ts";
import { type AgentConnection, eofFramed, eofFramedUpgrade, splice } from "../tunnel/mod.ts";
import { NoAgentError, UnsuitableAgentError } from "./cluster_sessions.ts";
import type { ChannelRouter } from "./channel_router.ts";
import { type Identity, mayReach, type UserAuthenticator } from "./user_auth.ts";
import { ChannelReserve, discard, KeepAliveChannels, oneShotAgent } from "./channel_reserve.ts";
import type { AuditLog } from "./audit.ts";
import { credentialStamp, type OpenStreams } from "./open_streams.ts";

/** Header telling the agent which identity mode a request uses. */
export const authModeHeader = "x-tower-auth-mode";

/** What the Kubernetes route needs from the hub. */
export interface KubeProxyDeps {
  /** Channels to a cluster's endpoints: on this replica's agents, or relayed by a peer replica's. */
  channels: ChannelRouter;
  registry: () => RegistryData;
  users: UserAuthenticator;
  audit: AuditLog;
  log: Logger;
  /** Requests in flight, closed when a registry change revokes them. */
  streams: OpenStreams;
}

/** An admitted request: who sent it and how to reach its target. */
interface Admitted {
  who: Identity;
  mode: AuthMode;
  upstream: Upstream;
  /** The channel this request owns. */
  channel: Duplex;
  /** What carries the request: this replica's agent session, or the peer replica relaying it. */
  carrier: Carrier;
  /** Gives back what the request held. */
  release(): void;
}

/** What carried a request, for its audit line. */
interface Carrier {
  agent?: AgentConnection;
  via?: string;
}

/** The audit fields naming a carrier. */
function carriedBy(c: Carrier | undefined): { agent: string | undefined; via?: string } {
  return { agent: c?.agent?.id, ...(c?.via ? { via: c.via } : {}) };
}

/** A request refused before proxying, with its HTTP status and a message kubectl prints. */
class Refusal extends Error {
  /** `who` is the authenticated caller when known, so the audit line names whom the hub refused. */
  constructor(readonly code: number, message: string, readonly who?: Identity) {
    super(message);
  }
}

/** Where a request goes: its cluster, and the path on that cluster's API server or Service. */
export interface KubeRoute {
  cluster: string;
  path: string;
  /** Set for `/clusters/NAME/services/NS/SVC:PORT/…`: a Service port inside the cluster. */
  service?: { namespace: string; name: string; port: string };
  /** The client's address, taken when the request arrives (an upgraded socket forgets it). */
  remote?: string | undefined;
}

const servicePath =
  /^\/services\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9-]{1,15})(\/.*)?$/;

/** Splits a service path off a cluster path, or returns the API route as is. */
function withService(r: KubeRoute): KubeRoute {
  const q = r.path.indexOf("?");
  const path = q < 0 ? r.path : r.path.slice(0, q);
  if (path !== "/services" && !path.startsWith("/services/")) return r;
  const m = servicePath.exec(path);
  if (!m) throw new Refusal(400, "service paths look like /clusters/NAME/services/NAMESPACE/SERVICE:PORT/…");
  return {
    cluster: r.cluster,
    path: (m[6] ?? "/") + (q < 0 ? "" : r.path.slice(q)),
    service: { namespace: m[1]!, name: m[3]!, port: m[5]! },
  };
}

/** Headers for a Service: hub credentials and identity headers never reach in-cluster services. */
function serviceHeaders(
  rawHeaders: string[],
  svc: NonNullable<KubeRoute["service"]>,
  remote: string | undefined,
): http.OutgoingHttpHeaders {
  const headers = endToEndHeaders(rawHeaders);
  forwardedFor(headers, remote);
  for (const name of Object.keys(headers)) {
    if (name.startsWith("impersonate-") || name.startsWith("x-tower-")) delete headers[name];
  }
  delete headers.authorization;
  // A named port (`hello:http`) cannot go into Host: a name there makes the header invalid, and
  // backends reject the request. The hub does not know the number, so Host then carries no port.
  headers.host = `${svc.name}.${svc.namespace}.svc${/^\d+$/.test(svc.port) ? `:${svc.port}` : ""}`;
  return headers;
}

/**
 * Splits `/clusters/NAME/REST?QUERY`. Returns undefined for other paths and throws a Refusal for
 * malformed ones: names that are not DNS labels, any percent-encoding in the name, and dot segments.
 */
export function parseClusterPath(url: string): KubeRoute | undefined {
  const q = url.indexOf("?");
  const rawPath = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? "" : url.slice(q);
  if (!rawPath.startsWith("/clusters/")) return undefined;
  const rest = rawPath.slice("/clusters/".length);
  const slash = rest.indexOf("/");
  const name = slash < 0 ? rest : rest.slice(0, slash);
  if (!isClusterName(name)) throw new Refusal(400, `'${name}' is not a valid cluster name`);
  const path = slash < 0 ? "/" : rest.slice(slash);
  return { cluster: name, path: checkedPath(path) + query };
}

/** Refuses dot segments (plain or percent-encoded) and encoded slashes, so no path can step sideways. */
function checkedPath(path: string): string {
  for (const seg of path.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      throw new Refusal(400, "malformed percent-encoding in path");
    }
    if (decoded === "." || decoded === ".." || decoded.includes("/") || decoded.includes("\\")) {
      throw new Refusal(400, "path must not contain dot segments or encoded slashes");
    }
  }
  return path;
}

/**
 * Appends the client's address to `X-Forwarded-For`, as the Kubernetes API server's own proxy does, so
 * that the API server's audit (`sourceIPs`) and a Service's logs name the client and not the agent.
 * Entries the client sent stay in front of it: only the last one is the hub's word.
 */
export function forwardedFor(headers: http.OutgoingHttpHeaders, remote: string | undefined): void {
  if (!remote) return;
  const client = remote.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  const sent = headers["x-forwarded-for"];
  const before = Array.isArray(sent) ? sent.join(", ") : sent === undefined ? "" : String(sent);
  headers["x-forwarded-for"] = before.trim() ? `${before}, ${client}` : client;
}

/**
 * The headers sent to the agent: client credentials and impersonation stripped, hub identity added, the
 * client's address appended to `X-Forwarded-For`.
 */
export function identityHeaders(
  rawHeaders: string[],
  mode: AuthMode,
  who: Identity,
  remote?: string,
): http.OutgoingHttpHeaders {
  const headers = endToEndHeaders(rawHeaders);
  forwardedFor(headers, remote);
  for (const name of Object.keys(headers)) {
    if (name.startsWith("impersonate-") || name.startsWith("x-tower-")) delete headers[name];
  }
  headers[authModeHeader] = mode;
  if (mode === "impersonate") {
    delete headers.authorization;
    headers["impersonate-user"] = who.user;
    if (who.groups.length) headers["impersonate-group"] = who.groups;
    for (const [key, values] of Object.entries(who.extra ?? {})) {
      // Characters not legal in a header name ('/') are percent-encoded; the API server decodes them.
      if (values.length) headers[`impersonate-extra-${encodeURIComponent(key)}`] = values;
    }
  }
  return headers;
}

/** The Kubernetes API route, as request and upgrade handlers for the front door. */
export function kubeProxy(deps: KubeProxyDeps): {
  /** Handles `/clusters/…` requests; false for other paths. */
  request: (req: http.IncomingMessage, res: http.ServerResponse, fixedCluster?: string) => boolean;
  /** Handles `/clusters/…` upgrades; false for other paths. */
  upgrade: (req: http.IncomingMessage, socket: Duplex, head: Uint8Array, fixedCluster?: string) => boolean;
} {
  const route = (req: http.IncomingMessage, fixedCluster?: string): KubeRoute | undefined => {
    const r = fixedCluster
      ? { cluster: fixedCluster, path: checkedPath((req.url ?? "/").split("?")[0]!) + query(req) }
      : parseClusterPath(req.url ?? "/");
    return r && { ...withService(r), remote: req.socket.remoteAddress };
  };
  const query = (req: http.IncomingMessage) => {
    const u = req.url ?? "";
    const q = u.indexOf("?");
    return q < 0 ? "" : u.slice(q);
  };

  const unsuitableFor = (mode: AuthMode) => `the agents of cluster '%s' do not accept auth mode '${mode}'`;

  // Ready channels to each cluster's API server, per auth mode.
  const reserves = new Map<string, ChannelReserve>();
  const reserveFor = (cluster: string, mode: AuthMode) => {
    const key = `${cluster}|${mode}`;
    let reserve = reserves.get(key);
    if (!reserve) {
      reserve = new ChannelReserve(() =>
        deps.channels.openChannel(cluster, kubernetesEndpoint, mode, unsuitableFor(mode))
      );
      reserves.set(key, reserve);
    }
    return reserve;
  };

  // Channels kept open between plain API requests, per cluster and auth mode.
  const keptAlive = new Map<string, KeepAliveChannels>();
  const keptAliveFor = (cluster: string, mode: AuthMode) => {
    const key = `${cluster}|${mode}`;
    let pool = keptAlive.get(key);
    if (!pool) keptAlive.set(key, pool = new KeepAliveChannels(reserveFor(cluster, mode)));
    return pool;
  };

  /** Who sent the request and whether they may reach the cluster; throws a Refusal otherwise. */
  const authorize = async (
    req: http.IncomingMessage,
    r: KubeRoute,
  ): Promise<{ who: Identity; mode: AuthMode }> => {
    const registry = deps.registry();
    const record: ClusterRecord | undefined = registry.clusters.find((c) => c.name === r.cluster);
    if (!record) {
      // Only a known caller learns that a name is not registered: anonymous callers get 401 for every
      // name, so cluster names cannot be enumerated.
      const auth = await deps.users.authenticate(req, registry);
      if (!auth.ok) throw new Refusal(401, `Unauthorized: ${auth.reason}`);
      throw new Refusal(404, `cluster '${r.cluster}' is not registered on this hub`, auth.identity);
    }
    const mode: AuthMode = record.mode ?? "impersonate";
    // A passthrough cluster's Authorization header is the cluster's; Service paths never pass it on.
    const auth = await deps.users.authenticate(req, registry, mode === "passthrough" && !r.service);
    if (!auth.ok) throw new Refusal(401, `Unauthorized: ${auth.reason}`);
    const who = auth.identity;
    if (!mayReach(who, r.cluster, registry)) {
      throw new Refusal(403, `user '${who.user}' may not reach cluster '${r.cluster}' through this hub`, who);
    }
    if (!deps.streams.hasRoomFor(who.user)) {
      throw new Refusal(
        429,
        `user '${who.user}' already has ${deps.streams.maxPerUser} requests open on this hub`,
        who,
      );
    }
    return { who, mode };
  };

  /** Maps "no agent" errors to the statuses kubectl shows. */
  const refusalOf = (e: unknown, who: Identity): unknown => {
    if (e instanceof UnsuitableAgentError) return new Refusal(502, e.message, who);
    if (e instanceof NoAgentError) return new Refusal(503, e.message, who);
    return e;
  };

  /**
   * A plain API request on a kept-alive channel. A reused channel that fails before any answer (its
   * agent just went away) is retried once on another when the request has no body.
   */
  const proxyKeptAlive = async (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    r: KubeRoute,
    who: Identity,
    mode: AuthMode,
  ): Promise<{ outcome: ProxyOutcome; carrier?: Carrier }> => {
    const outcome: ProxyOutcome = { status: 0, bytesIn: 0, bytesOut: 0, upgraded: false };
    const method = req.method ?? "GET";
    const headers = identityHeaders(req.rawHeaders, mode, who, r.remote);
    const length = req.headers["content-length"];
    const hasBody = length !== undefined ? length !== "0" : req.headers["transfer-encoding"] !== undefined;
    const abort = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    const pool = keptAliveFor(r.cluster, mode);
    for (let attempt = 0;; attempt++) {
      let c;
      try {
        c = await pool.take();
      } catch (e) {
        throw refusalOf(e, who);
      }
      const { channel } = c;
      let relay: BodyRelay | undefined;
      try {
        const result = await exchange(channel, {
          method,
          path: r.path,
          headers,
          body: hasBody ? req : undefined,
        }, {
          head: (h) => {
            outcome.status = h.status;
            relayHead(res, method, h.status, h.statusMessage, h.rawHeaders);
            relay = new BodyRelay(res, Number(h.header("content-length")), channel);
          },
          data: (piece) => {
            outcome.bytesOut += piece.length;
            relay!.data(piece);
          },
        }, abort.signal);
        relay?.end();
        outcome.bytesIn = result.bytesIn;
        if (result.reusable) pool.give(c);
        else discard(channel);
        return { outcome, carrier: c };
      } catch (e) {
        discard(channel);
        const answered = (e as { answered?: boolean }).answered === true;
        if (!answered && c.reused && !hasBody && attempt === 0 && !abort.signal.aborted) continue;
        outcome.error = (e as Error).message;
        if (!res.headersSent) sendStatus(res, 502, `cluster '${r.cluster}': ${(e as Error).message}`);
        else res.destroy();
        return { outcome, carrier: c };
      }
    }
  };

  /** Everything up to the upstream connection: who, may they, and how to reach the target. */
  const admit = async (req: http.IncomingMessage, r: KubeRoute): Promise<Admitted> => {
    const { who, mode } = await authorize(req, r);
    const svc = r.service;
    const endpoint = svc ? serviceEndpointName(svc.namespace, svc.name, svc.port) : kubernetesEndpoint;
    try {
      // API requests (and upgrades) take a ready channel, so they do not wait for a channel open.
      const opened = svc
        ? await deps.channels.openChannel(r.cluster, endpoint)
        : await reserveFor(r.cluster, mode).take();
      const { channel } = opened;
      // One channel per request, through an agent of its own (see channel_reserve.ts).
      return {
        who,
        mode,
        channel,
        upstream: {
          request: (o) =>
            Promise.resolve(
              http.request({
                ...o,
                agent: oneShotAgent(channel),
              }),
            ),
        },
        carrier: opened,
        release: () => discard(channel),
      };
    } catch (e) {
      throw refusalOf(e, who);
    }
  };

  /** Tracks a request until it ends; `end` cuts it off when a registry change revokes it. */
  const tracked = (r: KubeRoute, who: Identity, end: () => void) => {
    let revoked: string | undefined;
    const untrack = deps.streams.track({
      who,
      cluster: r.cluster,
      credential: credentialStamp(who, deps.registry()),
      close: (reason) => {
        revoked = reason;
        end();
      },
    });
    return { untrack, revoked: () => revoked };
  };

  const targetHeaders = (req: http.IncomingMessage, r: KubeRoute, mode: AuthMode, who: Identity) =>
    r.service
      ? serviceHeaders(req.rawHeaders, r.service, r.remote)
      : identityHeaders(req.rawHeaders, mode, who, r.remote);

  const audit = (
    req: http.IncomingMessage,
    r: KubeRoute,
    started: number,
    outcome: Pick<ProxyOutcome, "status" | "bytesIn" | "bytesOut" | "upgraded" | "error">,
    who?: Identity,
    carrier?: Carrier,
    revoked?: string,
  ) => {
    const [rest, q = ""] = r.path.split("?");
    const svc = r.service;
    const path = svc
      ? `/services/${svc.namespace}/${svc.name}:${svc.port}${rest === "/" ? "" : rest}`
      : rest!;
    deps.audit.record({
      user: who?.user,
      groups: who?.groups,
      cluster: r.cluster,
      method: req.method ?? "GET",
      verb: svc ? "proxy" : kubeVerb(req.method ?? "GET", path, new URLSearchParams(q)),
      path,
      status: outcome.status,
      bytesIn: outcome.bytesIn,
      bytesOut: outcome.bytesOut,
      durationMs: Math.round(performance.now() - started),
      ...carriedBy(carrier),
      remote: r.remote,
      ...(outcome.upgraded ? { upgraded: true } : {}),
      ...(outcome.error ? { error: outcome.error } : {}),
      ...(revoked ? { revoked } : {}),
    });
  };

  const auditRefusal = (req: http.IncomingMessage, r: KubeRoute, started: number, code: number, e: Error) =>
    audit(
      req,
      r,
      started,
      { status: code, bytesIn: 0, bytesOut: 0, upgraded: false, error: e.message },
      e instanceof Refusal ? e.who : undefined,
    );

  /**
   * `warn` also puts the message in a `Warning` header: client-go reads discovery answers raw and shows
   * only its own generic text for an error status ("the server could not find the requested resource"),
   * but kubectl prints every warning.
   */
  const sendStatus = (res: http.ServerResponse, code: number, message: string, warn = false) => {
    if (res.headersSent) return res.destroy();
    const body = kubeStatusText(code, message);
    res.writeHead(code, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      ...(warn ? { warning: warningValue(message) } : {}),
    });
    res.end(body);
  };

  return {
    request: (req, res, fixedCluster) => {
      let r: KubeRoute | undefined;
      try {
        r = route(req, fixedCluster);
      } catch (e) {
        if (!(e instanceof Refusal)) throw e;
        sendStatus(res, e.code, e.message);
        return true;
      }
      if (!r) return false;
      const started = performance.now();
      const kr = r;
      const refused = (e: Error) => {
        const code = e instanceof Refusal ? e.code : 500;
        if (!(e instanceof Refusal)) deps.log.error("kube proxy failed", { error: e });
        req.resume();
        sendStatus(res, code, e.message, !kr.service && isDiscoveryPath(kr.path));
        auditRefusal(req, kr, started, code, e);
      };
      if (!kr.service) {
        const keptAlive = async () => {
          const { who, mode } = await authorize(req, kr);
          const t = tracked(kr, who, () => res.destroy());
          try {
            return { who, ...await proxyKeptAlive(req, res, kr, who, mode), revoked: t.revoked() };
          } finally {
            t.untrack();
          }
        };
        keptAlive().then(
          ({ who, outcome, carrier, revoked }) => audit(req, kr, started, outcome, who, carrier, revoked),
          refused,
        );
        return true;
      }
      admit(req, kr).then(async (a) => {
        const t = tracked(kr, a.who, () => res.destroy());
        const outcome = await proxyRequest(
          req,
          res,
          { path: kr.path, headers: targetHeaders(req, kr, a.mode, a.who) },
          a.upstream,
          (e) => sendStatus(res, 502, `cluster '${kr.cluster}': ${e.message}`),
        );
        t.untrack();
        a.release();
        audit(req, kr, started, outcome, a.who, a.carrier, t.revoked());
      }, refused);
      return true;
    },
    upgrade: (req, socket, head, fixedCluster) => {
      const refuse = (code: number, message: string) => refuseWithStatus(socket, code, message);
      let r: KubeRoute | undefined;
      try {
        r = route(req, fixedCluster);
      } catch (e) {
        if (!(e instanceof Refusal)) throw e;
        refuse(e.code, e.message);
        return true;
      }
      if (!r) return false;
      if (!isUpgrade(req)) return false;
      const started = performance.now();
      const kr = r;
      admit(req, kr).then(async (a) => {
        const { who, carrier } = a;
        const t = tracked(kr, who, () => socket.destroy());
        if (kr.service && (req.headers.upgrade ?? "").toLowerCase() === eofFramedUpgrade) {
          // A TCP stream to the Service port (`main_server.ts forward`): answer the upgrade, then splice.
          socket.write(
            `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${eofFramedUpgrade}\r\n\r\n`,
          );
          if (head.length) socket.unshift(head);
          splice(eofFramed(socket), a.channel, (stats) => {
            t.untrack();
            audit(
              req,
              kr,
              started,
              {
                status: 101,
                bytesIn: stats.aToB,
                bytesOut: stats.bToA,
                upgraded: true,
                ...(stats.error ? { error: stats.error.message } : {}),
              },
              who,
              carrier,
              t.revoked(),
            );
          });
          return;
        }
        const outcome = await proxyUpgrade(
          req,
          socket,
          head,
          { path: kr.path, headers: targetHeaders(req, kr, a.mode, who) },
          a.upstream,
          (e) => refuse(502, `cluster '${kr.cluster}': ${e.message}`),
        );
        t.untrack();
        a.release();
        audit(req, kr, started, outcome, who, carrier, t.revoked());
      }, (e: Error) => {
        const code = e instanceof Refusal ? e.code : 500;
        refuse(code, e.message);
        auditRefusal(req, kr, started, code, e);
      });
      return true;
    },
  };
}
