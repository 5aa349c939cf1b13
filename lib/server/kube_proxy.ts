/**
 * The hub's Kubernetes route: `/clusters/NAME/…` (or a cluster's dedicated port) to that cluster's API
 * server or a Service in it, through an agent (this replica's, or one a peer replica holds). Composes the
 * pieces, each in its own module: routing (kube_route.ts), authentication and hub-side authorization
 * (user_auth.ts), identity headers (identity_headers.ts), where to send (cluster_upstreams.ts), the proxy
 * (lib/proxy), revocation of open requests (open_streams.ts) and the audit line (audit.ts).
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import type { AuthMode, RegistryData } from "../registry/mod.ts";
import { isDiscoveryPath, refuseWithStatus, sendStatus } from "../kube/status.ts";
import { longRunningKind } from "../kube/long_running.ts";
import { isUpgrade, type ProxyOutcome, type Responder, ReverseProxy } from "../proxy/mod.ts";
import { eofFramed, eofFramedUpgrade, splice, windDownEvent } from "../tunnel/mod.ts";
import { NoAgentError, UnsuitableAgentError } from "./cluster_sessions.ts";
import type { ChannelRouter } from "./channel_router.ts";
import type { RoutedChannel } from "./peer_channels.ts";
import { type Identity, mayReach, type UserAuthenticator } from "./user_auth.ts";
import { auditEntry, type AuditLog } from "./audit.ts";
import { credentialStamp, type OpenStreams } from "./open_streams.ts";
import { type KubeRoute, kubeRoute, Refusal } from "./kube_route.ts";
import { identityHeaders, serviceHeaders } from "./identity_headers.ts";
import { ClusterUpstreams } from "./cluster_upstreams.ts";

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

/**
 * Whether a request's answer is a stream of messages that a drain may end between two of them (the client
 * then resumes it): a watch, or a followed log. A finite log is not: ended early it would look complete.
 */
function endsBetweenMessages(method: string, path: string): boolean {
  const kind = longRunningKind(method, path);
  return kind === "watch" || (kind === "log" && /[?&]follow=(true|1)(&|$)/.test(path));
}

/** Prefix of the errors of the hop to the agent (the tunnel, the channel, the agent's answer framing). */
const tunnelFailed = "the tunnel to the cluster's agent failed: ";

/** The status of a channel that could not be had: no agent anywhere 503, agents refusing the mode 502. */
function unavailableStatus(e: unknown): number | undefined {
  if (e instanceof NoAgentError) return 503;
  if (e instanceof UnsuitableAgentError) return 502;
  return undefined;
}

/**
 * The proxy's own errors as `metav1.Status`. A refusal on a discovery path also carries its message in a
 * `Warning` header, which kubectl prints where it would show only client-go's generic text.
 */
const responder: Responder = {
  error: (res, code, message, cause) => {
    const own = unavailableStatus(cause);
    const path = (res.req?.url ?? "/").replace(/^\/clusters\/[^/?]+/, "");
    sendStatus(
      res,
      own ?? code,
      own ? message : tunnelFailed + message,
      own !== undefined && isDiscoveryPath(path),
    );
    return own ?? code;
  },
  socketError: (socket, code, message, cause) => {
    const own = unavailableStatus(cause);
    refuseWithStatus(socket, own ?? code, own ? message : tunnelFailed + message);
    return own ?? code;
  },
};

/** The Kubernetes API route, as request and upgrade handlers for the front door. */
export function kubeProxy(deps: KubeProxyDeps): {
  /** Handles `/clusters/…` requests (every request when `fixedCluster` is set); false for other paths. */
  request: (req: http.IncomingMessage, res: http.ServerResponse, fixedCluster?: string) => boolean;
  /** Handles `/clusters/…` upgrades; false for other paths. */
  upgrade: (req: http.IncomingMessage, socket: Duplex, head: Uint8Array, fixedCluster?: string) => boolean;
  /** Closes kept-alive connections. */
  close: () => void;
} {
  const upstreams = new ClusterUpstreams(deps.channels);
  const proxy = new ReverseProxy(responder);

  /** Who sent the request and whether they may reach the cluster; throws a Refusal otherwise. */
  const authorize = async (
    req: http.IncomingMessage,
    r: KubeRoute,
  ): Promise<{ who: Identity; mode: AuthMode }> => {
    const registry = deps.registry();
    const record = registry.clusters.find((c) => c.name === r.cluster);
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

  /** Where an admitted request goes, and with which headers. */
  const target = (req: http.IncomingMessage, r: KubeRoute, who: Identity, mode: AuthMode, remote?: string) =>
    r.service
      ? {
        upstream: upstreams.service(r.cluster, r.service),
        path: r.path,
        headers: serviceHeaders(req.rawHeaders, r.service, remote),
        framedClose: true,
      }
      : {
        upstream: upstreams.api(r.cluster, mode),
        path: r.path,
        headers: identityHeaders(req.rawHeaders, mode, who, remote),
        endsBetweenMessages: endsBetweenMessages(req.method ?? "GET", r.path),
        framedClose: true,
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

  const audit = (
    req: http.IncomingMessage,
    route: KubeRoute,
    started: number,
    remote: string | undefined,
    outcome: Pick<ProxyOutcome<RoutedChannel>, "status" | "bytesIn" | "bytesOut" | "upgraded" | "error">,
    who?: Refusal["who"],
    carrier?: RoutedChannel,
    revoked?: string,
  ) =>
    deps.audit.record(auditEntry({
      method: req.method ?? "GET",
      route,
      started,
      ended: performance.now(),
      outcome,
      who,
      agent: carrier?.agent?.id,
      via: carrier?.via,
      remote,
      revoked,
    }));

  /** The route of a request, or a refusal already answered (undefined: not this route's path). */
  const routeOf = (
    req: http.IncomingMessage,
    fixedCluster: string | undefined,
    refuse: (code: number, message: string) => void,
  ): KubeRoute | "refused" | undefined => {
    try {
      return kubeRoute(req.url ?? "/", fixedCluster);
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      refuse(e.code, e.message);
      return "refused";
    }
  };

  /** Answers and audits a request refused before proxying. */
  const refused = (
    req: http.IncomingMessage,
    r: KubeRoute,
    started: number,
    remote: string | undefined,
    e: unknown,
    answer: (code: number, message: string) => void,
  ) => {
    if (!(e instanceof Refusal)) deps.log.error("kube proxy failed", { error: e });
    const code = e instanceof Refusal ? e.code : 500;
    const message = (e as Error).message;
    answer(code, message);
    audit(
      req,
      r,
      started,
      remote,
      { status: code, bytesIn: 0, bytesOut: 0, upgraded: false, error: message },
      e instanceof Refusal ? e.who : undefined,
    );
  };

  return {
    request: (req, res, fixedCluster) => {
      const r = routeOf(req, fixedCluster, (code, message) => sendStatus(res, code, message));
      if (r === undefined) return false;
      if (r === "refused") return true;
      const started = performance.now();
      const remote = req.socket.remoteAddress;
      authorize(req, r).then(
        async ({ who, mode }) => {
          const t = tracked(r, who, () => res.destroy());
          try {
            const o = await proxy.request(req, res, target(req, r, who, mode, remote));
            audit(req, r, started, remote, o, who, o.carrier, t.revoked());
          } finally {
            t.untrack();
          }
        },
        (e) => {
          // The body is read and dropped, so the client's keep-alive connection carries its next request.
          req.resume();
          const warn = !r.service && isDiscoveryPath(r.path);
          refused(req, r, started, remote, e, (code, message) => sendStatus(res, code, message, warn));
        },
      ).catch((e) => deps.log.error("kube proxy failed", { error: e }));
      return true;
    },
    upgrade: (req, socket, head, fixedCluster) => {
      const refuse = (code: number, message: string) => refuseWithStatus(socket, code, message);
      const r = routeOf(req, fixedCluster, refuse);
      if (r === undefined) return false;
      if (r === "refused") return true;
      if (!isUpgrade(req)) return false;
      const started = performance.now();
      const remote = req.socket.remoteAddress;
      authorize(req, r).then(async ({ who, mode }) => {
        const t = tracked(r, who, () => socket.destroy());
        if (r.service && (req.headers.upgrade ?? "").toLowerCase() === eofFramedUpgrade) {
          // A TCP stream to the Service port (`main_server.ts forward`): answer the upgrade, then splice.
          let routed: RoutedChannel;
          try {
            routed = await upstreams.serviceChannel(r.cluster, r.service);
          } catch (e) {
            t.untrack();
            const code = unavailableStatus(e) ?? 502;
            return refused(req, r, started, remote, new Refusal(code, (e as Error).message, who), refuse);
          }
          socket.write(
            `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${eofFramedUpgrade}\r\n\r\n`,
          );
          if (head.length) socket.unshift(head);
          const framed = eofFramed(socket);
          // Wound down (a drain here, or of the peer relaying the channel), the stream ends as its framing
          // says: an EOF frame after the last whole frame, the TCP end of what the Service sent; what the
          // Service sends after it is dropped. The client's own end then closes the stream.
          const windDown = () => {
            if (framed.writableEnded) return;
            routed.channel.unpipe(framed);
            routed.channel.resume();
            framed.end();
          };
          socket.once(windDownEvent, windDown);
          routed.channel.once(windDownEvent, windDown);
          splice(framed, routed.channel, (stats) => {
            socket.off(windDownEvent, windDown);
            t.untrack();
            const outcome = {
              status: 101,
              bytesIn: stats.aToB,
              bytesOut: stats.bToA,
              upgraded: true,
              error: stats.error?.message,
            };
            audit(req, r, started, remote, outcome, who, routed, t.revoked());
          });
          return;
        }
        try {
          const o = await proxy.upgrade(req, socket, head, target(req, r, who, mode, remote));
          audit(req, r, started, remote, o, who, o.carrier, t.revoked());
        } finally {
          t.untrack();
        }
      }, (e) => refused(req, r, started, remote, e, refuse)).catch((e) =>
        deps.log.error("kube proxy failed", { error: e })
      );
      return true;
    },
    close: () => upstreams.close(),
  };
}
