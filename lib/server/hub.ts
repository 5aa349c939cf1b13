/**
 * The hub: front door, SSH server for agent tunnels, live sessions, registry watch, forward listeners,
 * metrics, the admin API and its sockets. It wires these together and applies registry changes to live
 * sessions; each concern lives in its own module.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { ReportEvery } from "../log/report_every.ts";
import { longRunningKind } from "../kube/long_running.ts";
import { InFlight } from "./in_flight.ts";
import { drain, type DrainReport } from "./drain.ts";
import { peerIdentity, type PeerListener, startPeerListener } from "./peer_link.ts";
import { answerRouteLookups, PeerRoutes } from "./peer_routes.ts";
import { PeerChannels, relayPeerChannels } from "./peer_channels.ts";
import { ChannelRouter } from "./channel_router.ts";
import { hostname } from "node:os";
import type { CertPair } from "./tls_material.ts";
import { FileReplicaLeases, type RegistryData, type ReplicaLeases } from "../registry/mod.ts";
import { acceptTunnel, maxReplicas, SshHub, tunnelWebSocketServer } from "../tunnel/mod.ts";
import { ClusterSessions } from "./cluster_sessions.ts";
import { agentAuthenticator } from "./agent_auth.ts";
import { OpenStreams } from "./open_streams.ts";
import type { HubStorage } from "./hub_storage.ts";
import { ClusterStatusWriter } from "../registry/k8s_cluster_status.ts";
import { KubeReplicaLeases } from "../registry/k8s_replica_leases.ts";
import { answer, type FrontDoor, refuseUpgrade, startFrontDoor } from "./front_door.ts";
import { type ForwardListener, type ForwardRule, startForward } from "./tcp_forward.ts";
import { kubeProxy } from "./kube_proxy.ts";
import { HubMetrics } from "./hub_metrics.ts";
import { adminApi, checkAdmin } from "./admin_api.ts";
import { adminSocketPath, askAdminSocket, startAdminSocket } from "./admin_socket.ts";
import { gatherSnapshots, replicaSnapshot, type SnapshotSource } from "./replica_snapshot.ts";
import { StatusHistory } from "./status_history.ts";
import { statusRoute } from "./status_route.ts";
import { answerMetrics, type MetricsListener, startMetricsListener } from "../metrics/mod.ts";
import { UserAuthenticator } from "./user_auth.ts";
import { type OidcIssuerConfig, OidcVerifier } from "./oidc_verifier.ts";
import { type AuditLog, openAuditLog } from "./audit.ts";
import { type LbConfig, LbManager } from "./lb_manager.ts";

/** Tower's version, reported in hellos and `/version`-like places. */
export const towerVersion = "0.1.0";

/** A replica's lease lapses this long after its last renewal (renewed every third of it). */
const replicaLeaseTtlMs = 15_000;

/** How often a replica looks for Cluster status entries of replicas that are gone (a local scan). */
const statusPruneMs = 30_000;

/** How long a replica waits for a peer's snapshot before listing it as unreachable. */
const peerAskTimeoutMs = 2000;

/** With other replicas alive, a draining replica serves until no request has started for this long. */
const drainQuietMs = 2000;
/** A draining replica spreads its agents' reconnects over at most this long. */
const drainStaggerMs = 10_000;

/** Everything `serve` needs. */
export interface HubConfig {
  /** Registry and hub material (opened by the caller, closed by the hub). */
  storage: HubStorage;
  /** This replica's identity (a DNS label), told to agents in the control hello. */
  replicaId: string;
  host: string;
  port: number;
  /** `self-signed`: hub CA + generated cert; `files`: user cert/key; `plain`: HTTP without TLS. */
  tls: { mode: "self-signed"; names: string[] } | { mode: "files"; certFile: string; keyFile: string } | {
    mode: "plain";
  };
  forwards: ForwardRule[];
  keepaliveMs: number;
  handshakeTimeoutMs: number;
  /** Audit log destination: `-` for stdout, or a file. */
  auditLog: string;
  /** The peer link's listener and the address peers dial (default: the listen address); none if absent. */
  peer?: { host: string; port: number; advertise?: string | undefined } | undefined;
  /** Public LoadBalancer ports; undefined: LoadBalancer Services are not served. */
  lb?: LbConfig | undefined;
  /** Users in this group may use the admin API, `/metrics` and the status page on the front door. */
  adminGroup?: string | undefined;
  /**
   * Per-request metrics (requests, latency, open streams, the status page's charts); default on. Off is
   * for measuring what they cost (BENCHMARKS.md); session, channel and LB metrics stay.
   */
  requestMetrics?: boolean | undefined;
  /** A separate address serving only `/metrics`, without credentials. */
  metricsListen?: { host: string; port: number } | undefined;
  /** Trusted OpenID Connect issuers whose ID tokens are accepted as bearer tokens. */
  oidc?: OidcIssuerConfig[];
  log: Logger;
}

/** A running hub. */
export interface Hub {
  port: number;
  fingerprint: string;
  /** The hub CA certificate (PEM), which agents and kubeconfigs trust. */
  ca: CertPair;
  sessions: ClusterSessions;
  lb: LbManager | undefined;
  frontDoor: FrontDoor;
  /** The peer link listener, when the hub has one. */
  peerLink: PeerListener | undefined;
  forwards: ForwardListener[];
  registry(): RegistryData;
  /** Drains (see drain.ts); call {@link Hub.close} afterwards. */
  drain(timeoutMs: number): Promise<DrainReport>;
  close(): Promise<void>;
}

/**
 * Whether a live peer that is not draining serves every cluster this replica holds agents of (clusters
 * whose agents here publish nothing are not waited for). One lookup per peer, whatever the cluster count.
 */
async function clustersHeldElsewhere(sessions: ClusterSessions, routes: PeerRoutes): Promise<boolean> {
  const held = await routes.clustersHeld();
  return sessions.clusters().every((c) => held.has(c) || sessions.of(c).every((a) => a.endpoints.size === 0));
}

/** Starts a hub from `config`. */
export async function startHub(config: HubConfig): Promise<Hub> {
  const log = config.log;
  const storage = config.storage;
  const dataDir = storage.dataDir;
  const registryStore = storage.registry;
  let registry = await registryStore.read();
  let clusterNames = new Set(registry.clusters.map((c) => c.name));
  const hostKey = await storage.material.hostKey();
  const ca = await storage.material.ca();
  const tls = config.tls.mode === "plain" ? undefined : await storage.material.servingCert(
    ca,
    config.tls.mode === "self-signed" ? config.tls.names : [],
    config.tls.mode === "files" ? config.tls : undefined,
  );

  // The metrics read the sessions, and the sessions report channel opens to the metrics.
  const sessions = new ClusterSessions({ channelOpened: (s, ok) => m.channelOpened(s, ok) });
  // In a host cluster, Cluster status shows the agents of every replica (written on connect/disconnect).
  const statusWriter = storage.kubernetes
    ? new ClusterStatusWriter(storage.kubernetes.host, storage.kubernetes.registry, config.replicaId, log)
    : undefined;
  await statusWriter?.start(registry.clusters.map((c) => c.name));
  const reportAgents = (cluster: string) => {
    const live = sessions.of(cluster);
    statusWriter?.set(cluster, live.length, live.map((a) => a.since.toISOString()).sort()[0]);
  };
  // Every user request and stream is counted, so a drain knows when the ordinary ones are done.
  const inFlight = new InFlight();
  // Replicas in a host cluster hold Leases there; otherwise lease files in the (shared) data dir.
  const host = storage.kubernetes?.host;
  const leases: ReplicaLeases = host
    ? new KubeReplicaLeases({ kc: host.kc, namespace: host.namespace, ttlMs: replicaLeaseTtlMs, log })
    : new FileReplicaLeases({ dir: dataDir.paths.replicas, ttlMs: replicaLeaseTtlMs, log });
  // A draining replica is no place for a new tunnel: agents do not count it.
  const liveReplicas = () =>
    Math.min(maxReplicas, Math.max(1, leases.live().filter((l) => !l.draining).length));
  // Entries of replicas that died without removing their own leave Cluster status when their lease lapses.
  // Not before this replica's lease watch has listed every lease (until then `live` is partial).
  let leasesListed = false;
  const pruneStatus = () =>
    void (leasesListed &&
      statusWriter?.pruneGone(leases.live().map((l) => l.id), [...clusterNames]).catch((e) =>
        log.warn("cluster status not pruned", { error: e })
      ));
  leases.onChange((live) => {
    log.info("replicas changed", { replicas: live.map((l) => l.id) });
    const msg = { type: "replicas", replicas: liveReplicas() };
    for (const c of sessions.clusters()) for (const a of sessions.of(c)) a.send(msg);
    pruneStatus();
  });
  let peerLink: PeerListener | undefined;
  let peerAddress: string | undefined;
  let channels = new ChannelRouter(sessions);
  let routes: PeerRoutes | undefined;
  if (config.peer) {
    const identity = await peerIdentity(await storage.material.peerCa(), config.replicaId);
    routes = new PeerRoutes({
      identity,
      peers: () => leases.live().filter((l) => l.id !== config.replicaId),
      log,
    });
    channels = new ChannelRouter(
      sessions,
      new PeerChannels({ identity, routes, counted: (result) => m.peerForward(result), log }),
    );
    peerLink = await startPeerListener({
      host: config.peer.host,
      port: config.peer.port,
      identity,
      isLivePeer: (id) => id !== config.replicaId && leases.live().some((l) => l.id === id),
      log,
    });
    peerLink.route(answerRouteLookups(sessions, config.replicaId, () => inFlight.draining, log));
    peerLink.upgrade(relayPeerChannels(sessions, log, (c) => inFlight.relayed(c)));
    const host = ["0.0.0.0", "::", ""].includes(config.peer.host) ? hostname() : config.peer.host;
    peerAddress = config.peer.advertise ?? `${host.includes(":") ? `[${host}]` : host}:${peerLink.port}`;
    log.info("peer link listening", {
      listen: `${config.peer.host}:${peerLink.port}`,
      advertise: peerAddress,
    });
  }
  await leases.hold(config.replicaId, peerAddress);
  leasesListed = true;
  pruneStatus();
  // Entries of replicas this one never saw alive are removed once old enough (see pruneGone).
  const pruneTimer = statusWriter ? setInterval(pruneStatus, statusPruneMs) : undefined;
  const lb = config.lb ? new LbManager(config.lb, sessions, channels, registryStore, log) : undefined;
  const m = new HubMetrics({
    sessions,
    lb,
    registered: (name) => clusterNames.has(name),
  });
  const history = new StatusHistory();
  m.onRequest((entry, cluster) => history.request(entry, cluster));
  lb?.onRefused((reason, service) => {
    m.lbRefused(reason);
    history.refused({
      what: "lb",
      cluster: m.cluster(service.split("/")[0]!),
      code: 0,
      user: null,
      reason: `${reason}: ${service}`,
    });
  });
  await lb?.start(registry);
  const agentAuth = agentAuthenticator(() => registry, log);
  const ssh = new SshHub({
    hostKey: hostKey.key,
    authenticate: async (cluster, token, address) => {
      const ok = await agentAuth(cluster, token, address);
      if (!ok) {
        m.agentRefused(cluster);
        history.refused({
          what: "agent",
          cluster: m.cluster(cluster),
          code: 0,
          user: null,
          reason: `agent login from ${address} refused (wrong join token or unknown cluster)`,
        });
      }
      return ok;
    },
    onAgent: (agent) => {
      log.info("agent connected", { cluster: agent.cluster, agent: agent.id, remote: agent.remoteAddress });
      m.agentConnected(agent);
      sessions.add(agent);
      status.changed();
      reportAgents(agent.cluster);
      agent.onClose((reason) => {
        log.info("agent disconnected", { cluster: agent.cluster, agent: agent.id, reason });
        reportAgents(agent.cluster);
        status.changed();
      });
    },
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    keepaliveMs: config.keepaliveMs,
    onControl: (agent, msg) => {
      if (lb?.onControl(agent, msg)) return;
      log.debug("control message ignored", { agent: agent.id, type: msg.type });
    },
    hello: () => ({ version: towerVersion, replica: config.replicaId, replicas: liveReplicas() }),
    log,
  });

  const audit: AuditLog = await openAuditLog(config.auditLog);
  const users = new UserAuthenticator({
    clientCaPem: ca.cert,
    ...(config.oidc?.length ? { oidc: new OidcVerifier(config.oidc, log) } : {}),
    log,
  });
  const streams = new OpenStreams();
  const requestMetrics = config.requestMetrics ?? true;
  const kube = kubeProxy({
    channels,
    registry: () => registry,
    users,
    audit: requestMetrics ? m.observing(audit) : audit,
    log,
    streams,
  });
  const replica = config.replicaId;
  const local = () =>
    replicaSnapshot({
      replica,
      version: towerVersion,
      sessions,
      lb,
      streams: () => m.streamsOpen(),
      requests: () => ({
        draining: inFlight.draining,
        ordinary: inFlight.ordinary,
        longRunning: inFlight.longRunning,
      }),
    });
  // Every live replica (by lease) is asked for its own snapshot on its admin socket: replicas share the
  // data dir. Replicas on other machines would be asked over the peer link instead: this is that seam.
  const socketsDir = dataDir.paths.adminSockets;
  const snapshots: SnapshotSource = async () =>
    gatherSnapshots(
      await local(),
      leases.live().map((l) => l.id).filter((id) => id !== replica),
      (peer) => askAdminSocket(adminSocketPath(socketsDir, peer), "/api/tower/v1/snapshot", peerAskTimeoutMs),
    );
  /** Admins on the front door: the admin API, `/metrics` and the status page. Refusals are counted. */
  const isAdmin = async (req: http.IncomingMessage) => {
    const check = await checkAdmin(req, users, registry, config.adminGroup);
    if (!check.ok) m.authFailure(check.code === 401 ? "user" : "forbidden");
    return check;
  };
  const api = adminApi({ registry: () => registry, check: isAdmin, snapshots, local });
  /** The cluster a user request names (its dedicated port's, or the one in `/clusters/NAME/`). */
  const clusterOf = (req: http.IncomingMessage, fixed?: string) =>
    fixed ?? /^\/clusters\/([^/?]+)/.exec(req.url ?? "")?.[1] ?? "";
  const wss = tunnelWebSocketServer();
  let closing = false;
  // Tunnels refused at the login cap, logged as one line per 10 s at most (a storm is thousands).
  const refusedLogins = new ReportEvery(10_000);
  const refuseLogin = (socket: Duplex) => {
    refuseUpgrade(socket, 503, "too many agents are logging in to this hub replica: dial again later");
    const count = refusedLogins.count();
    if (count !== undefined) {
      log.warn("agent tunnels refused: too many logging in", { count, loggingIn: ssh.loggingIn });
    }
  };
  const frontDoor = await startFrontDoor({
    host: config.host,
    port: config.port,
    ...(tls ? { tls: { ...tls, clientCa: ca.cert } } : {}),
    ready: () => !closing && !inFlight.draining,
    log,
  });
  // Long-running ones are also counted per cluster and kind for the metrics.
  const userRequest = (req: http.IncomingMessage, res: http.ServerResponse, cluster?: string) => {
    if (!kube.request(req, res, cluster)) return false;
    const kind = longRunningKind(req.method ?? "GET", req.url ?? "/");
    inFlight.request(res, kind !== undefined);
    if (kind && requestMetrics) m.streamStarted(clusterOf(req, cluster), kind, res);
    return true;
  };
  const userUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Uint8Array, cluster?: string) => {
    if (!kube.upgrade(req, socket, head, cluster)) return false;
    inFlight.upgrade(socket);
    if (requestMetrics) {
      m.streamStarted(
        clusterOf(req, cluster),
        longRunningKind(req.method ?? "GET", req.url ?? "/", true)!,
        socket,
      );
    }
    return true;
  };
  frontDoor.route((req, res) => userRequest(req, res));
  frontDoor.upgrade((req, socket, head) => userUpgrade(req, socket, head));
  const status = statusRoute({
    check: isAdmin,
    view: async () => {
      const snaps = await snapshots();
      const clusters = await api.clusters(snaps);
      return {
        clusters,
        rates: Object.fromEntries(clusters.clusters.map((c) => [c.name, history.rates(c.name)])),
        lbPorts: (await api.lbPorts(snaps)).ports,
        refusals: history.refusals(),
        at: new Date(),
      };
    },
    log,
  });
  frontDoor.route(status.route);
  frontDoor.route(api.route);
  frontDoor.route((req, res) => {
    if ((req.url ?? "").split("?")[0] !== "/metrics") return false;
    req.resume();
    isAdmin(req).then(async (check) => {
      if (!check.ok) return answer(res, check.code, check.message);
      await answerMetrics(m.registry, req, res);
    }).catch((e) => {
      log.error("metrics not rendered", { error: e });
      res.destroy();
    });
    return true;
  });
  frontDoor.route((req, res) => {
    if ((req.url ?? "").split("?")[0] !== "/tunnel") return false;
    answer(res, 426, "the tunnel path takes WebSocket upgrades only");
    return true;
  });
  frontDoor.upgrade((req, socket, head) => {
    if ((req.url ?? "").split("?")[0] !== "/tunnel") return false;
    if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") {
      refuseUpgrade(socket, 400, "the tunnel path takes WebSocket upgrades only");
      return true;
    }
    if (inFlight.draining) {
      refuseUpgrade(socket, 503, "this hub replica is draining: dial again to reach another one");
      return true;
    }
    if (ssh.atLoginCap()) {
      refuseLogin(socket);
      return true;
    }
    acceptTunnel(wss, req, socket, head).then((t) => ssh.accept(t), (e) => {
      log.warn("tunnel upgrade failed", { error: e });
      socket.destroy();
    });
    return true;
  });

  // Clusters with a dedicated port get their own listener whose every path goes to that cluster.
  const clusterDoors = new Map<string, { port: number; door: Promise<FrontDoor | undefined> }>();
  const syncClusterDoors = () => {
    const wanted = new Map(registry.clusters.filter((c) => c.port).map((c) => [c.name, c.port!]));
    for (const [name, entry] of clusterDoors) {
      if (wanted.get(name) !== entry.port) {
        clusterDoors.delete(name);
        void entry.door.then((d) => d?.close());
      }
    }
    for (const [name, port] of wanted) {
      if (clusterDoors.has(name)) continue;
      const door = startFrontDoor({
        host: config.host,
        port,
        ...(tls ? { tls: { ...tls, clientCa: ca.cert } } : {}),
        ready: () => !closing && !inFlight.draining,
        log,
      }).then((d) => {
        d.route((req, res) => userRequest(req, res, name));
        d.upgrade((req, socket, head) => userUpgrade(req, socket, head, name));
        log.info("cluster port listening", { cluster: name, port });
        return d;
      }, (e) => {
        log.error("cluster port not available", { cluster: name, port, error: e });
        return undefined;
      });
      clusterDoors.set(name, { port, door });
    }
  };
  syncClusterDoors();

  // Admin commands edit the registry file; apply their effect on live sessions here.
  const stopWatch = registryStore.watch((next) => {
    const before = new Map(registry.clusters.map((c) => [c.name, c.tokenHash]));
    const labelsBefore = new Map(registry.clusters.map((c) => [c.name, JSON.stringify(c.labels ?? {})]));
    registry = next;
    const revoked = streams.revoke(next);
    if (revoked.length) {
      const reasons: Record<string, number> = {};
      for (const r of revoked) reasons[r] = (reasons[r] ?? 0) + 1;
      log.info("streams closed by a registry change", { count: revoked.length, reasons });
    }
    // With peers, every replica serves every allocated port, whichever replica allocated it.
    if (peerLink) void lb?.follow();
    clusterNames = new Set(next.clusters.map((c) => c.name));
    for (const c of next.clusters) {
      const labels = JSON.stringify(c.labels ?? {});
      if (labelsBefore.has(c.name) && labelsBefore.get(c.name) !== labels) {
        // Access rules read labels per request: from here on they see these.
        log.info("cluster labels changed", { cluster: c.name, labels: c.labels ?? {} });
      }
    }
    const after = new Map(next.clusters.map((c) => [c.name, c.tokenHash]));
    for (const [name, hash] of before) {
      if (!after.has(name)) {
        const n = sessions.closeCluster(name, "cluster removed");
        void lb?.releaseCluster(name);
        history.forget(name);
        log.info("cluster removed", { cluster: name, sessionsClosed: n });
      } else if (after.get(name) !== hash) {
        const n = sessions.closeCluster(name, "join token rotated");
        log.info("cluster token rotated", { cluster: name, sessionsClosed: n });
      }
    }
    syncClusterDoors();
  });

  const adminSocket = await startAdminSocket(adminSocketPath(socketsDir, replica), api.serve, log);
  let metricsListener: MetricsListener | undefined;
  if (config.metricsListen) {
    const { host, port } = config.metricsListen;
    metricsListener = await startMetricsListener(host, port, m.registry, log);
    log.info("metrics listening", { listen: `${host}:${metricsListener.port}` });
  }

  const forwards: ForwardListener[] = [];
  try {
    for (const rule of config.forwards) forwards.push(await startForward(rule, channels, log));
  } catch (e) {
    stopWatch();
    clearInterval(pruneTimer);
    await Promise.all([
      frontDoor.close(),
      ...forwards.map((f) => f.close()),
      adminSocket?.close(),
      metricsListener?.close(),
    ]);
    await peerLink?.close();
    await leases.release();
    await storage.close();
    throw e;
  }

  return {
    port: frontDoor.port,
    fingerprint: hostKey.fingerprint,
    ca,
    sessions,
    lb,
    frontDoor,
    peerLink,
    forwards,
    registry: () => registry,
    drain: (timeoutMs) =>
      drain({
        inFlight,
        agents: () => sessions.clusters().flatMap((c) => sessions.of(c)),
        othersAlive: () => leases.live().some((l) => l.id !== config.replicaId && !l.draining),
        markDraining: () => leases.setDraining(),
        ...(routes ? { heldElsewhere: () => clustersHeldElsewhere(sessions, routes!) } : {}),
        log,
      }, { timeoutMs, quietMs: drainQuietMs, staggerMs: drainStaggerMs }),
    close: async () => {
      closing = true;
      clearInterval(pruneTimer);
      status.close();
      stopWatch();
      const held = sessions.clusters();
      sessions.closeAll("hub shutting down");
      kube.close();
      for (const client of wss.clients) client.terminate();
      const doors = await Promise.all([...clusterDoors.values()].map((e) => e.door));
      await Promise.all([
        frontDoor.close(),
        ...forwards.map((f) => f.close()),
        ...doors.map((d) => d?.close()),
        adminSocket?.close(),
        metricsListener?.close(),
      ]);
      await audit.close();
      await lb?.close();
      await peerLink?.close();
      await leases.release();
      await statusWriter?.close(held);
      await storage.close();
    },
  };
}
