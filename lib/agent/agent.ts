/**
 * The agent's life: dial the hub, log in, publish endpoints, serve channels until the session ends,
 * then reconnect with exponential backoff and full jitter. Behind a load balancer it keeps tunnels to
 * `--hub-connections` distinct hub replicas (or every replica, when there are fewer): it dials again
 * until the hubs' hellos name enough different replicas, dropping a tunnel to a replica it already holds. Only a configuration error (a hub host key
 * other than the pinned one) stops it; a refused token is logged loudly and retried.
 * @module
 */

import { hostname } from "node:os";
import type { Logger } from "../log/log.ts";
import {
  AuthRefusedError,
  Backoff,
  connectHub,
  type ControlMessage,
  dialTunnel,
  type Endpoint,
  HostKeyMismatchError,
  type HubHello,
  type HubSession,
  parseReconnect,
  parseReplicasUpdate,
  proxyFor,
  redactUrl,
  type TunnelStream,
} from "../tunnel/mod.ts";
import type { AgentConfig } from "./agent_config.ts";
import { tcpEndpoint } from "./endpoints.ts";
import { kubeEndpoint } from "./kube_endpoint.ts";
import { kubernetesEndpoint } from "../kube/endpoint_names.ts";
import { ServiceCatalog } from "./service_catalog.ts";
import { startServiceController } from "./service_controller.ts";
// Types only: prom-client is loaded (by the entrypoint) only when metrics are asked for.
import type { AgentMetrics } from "./agent_metrics.ts";
import { type MetricsListener, startMetricsListener } from "../metrics/metrics_listener.ts";

/** Agent version reported to the hub. */
export const agentVersion = "0.1.0";

/** Most duplicate tunnels an agent holds while looking for another replica. */
const maxParked = 4;

/** How long the agent waits for the hub's hello after logging in. */
const helloTimeoutMs = 10_000;

/** Consecutive refusals after which the agent logs at error level. */
const loudAfterRefusals = 3;

/** A running agent. */
export interface Agent {
  /** Drops the current session (if any) and reconnects without waiting. */
  reconnectNow(): void;
  /** Stops for good. */
  stop(): void;
  /** Settles when the agent stops; rejects on a configuration error. */
  done: Promise<void>;
}

/** Starts the agent loop; with `metrics`, counts its work there and serves them on `cfg.metricsListen`. */
export function startAgent(cfg: AgentConfig, log: Logger, metrics?: AgentMetrics): Agent {
  const id = `${hostname()}-${crypto.randomUUID().slice(0, 8)}`;
  const endpoints = new Map<string, Endpoint>();
  const counted = (name: string, ep: Endpoint) => metrics ? metrics.instrument(name, ep) : ep;
  for (const p of cfg.publish) endpoints.set(p.name, counted(p.name, tcpEndpoint(p.host, p.port)));
  const kube = cfg.kubernetes
    ? kubeEndpoint({
      ...cfg.kubernetes,
      log: log.with({ endpoint: "kubernetes" }),
      ...(metrics
        ? { onResponse: (seconds: number, status: number) => metrics.apiserverResponse(seconds, status) }
        : {}),
    })
    : undefined;
  if (kube) endpoints.set(kubernetesEndpoint, counted(kubernetesEndpoint, kube));
  /** Backoff while the agent holds no tunnel at all. */
  const backoff = new Backoff({ baseMs: 1000, capMs: cfg.backoffCapMs, resetAfterMs: 60_000 });
  /** Backoff between dials for more replicas while at least one tunnel is up (duplicates count as failures). */
  let spread = new Backoff({ baseMs: 1000, capMs: cfg.backoffCapMs, resetAfterMs: 60_000 });
  const tunnels = new Set<Tunnel>();
  /** Duplicate tunnels held (unused) while dialing for a distinct replica; see the loop. */
  const parked: HubSession[] = [];
  /** Live replicas, as the hub last said; the agent wants min(--hub-connections, this) tunnels. */
  let replicas = 1;
  let stopped = false;
  let skipWait = false;
  let needDelay = false;
  let wake: () => void = () => {};
  const proxy = proxyFor(cfg.hubUrl, cfg.proxyEnv);
  const alog = log.with({ cluster: cfg.cluster, agent: id });
  /** Tunnels that count toward the target: not told to move away. */
  const staying = () => [...tunnels].filter((t) => !t.leaving);
  const wanted = () => Math.min(cfg.hubConnections, replicas);

  const controlHandlers = new Set<(msg: ControlMessage) => void>();
  const connectedHandlers = new Set<() => void>();
  /** Endpoints that come and go with the cluster's Services; published and withdrawn on the live session. */
  let serviceNames = new Set<string>();
  const setServiceEndpoints = (next: Map<string, Endpoint>) => {
    for (const name of serviceNames) {
      if (next.has(name)) continue;
      endpoints.delete(name);
      for (const t of tunnels) void t.session.unpublish(name);
    }
    for (const [name, raw] of next) {
      const isNew = !endpoints.has(name);
      const ep = counted(name, raw);
      endpoints.set(name, ep);
      if (!isNew) continue;
      for (const t of tunnels) {
        t.session.publish(name, ep).catch((e) => alog.warn("publish failed", { endpoint: name, error: e }));
      }
    }
    serviceNames = new Set(next.keys());
  };
  let stopServices: (() => void) | undefined;
  const catalog = cfg.kubernetes && cfg.services ? new ServiceCatalog(cfg.kubernetes, alog) : undefined;
  if (catalog && cfg.services) {
    const services = cfg.services;
    catalog.start().then(() => {
      alog.info("watching services", { namespaces: services.allow.namespaces, lbClass: services.lbClass });
      stopServices = startServiceController({
        catalog,
        access: cfg.kubernetes!,
        allow: services.allow,
        lbClass: services.lbClass,
        lbWithoutClass: services.lbWithoutClass,
        publish: setServiceEndpoints,
        hub: {
          // Every replica holding a tunnel hears it; allocation is idempotent for the same wanted ports.
          send: (msg) => [...tunnels].map((t) => t.session.send(msg)).some(Boolean),
          onControl: (h) => void controlHandlers.add(h),
          onConnected: (h) => void connectedHandlers.add(h),
        },
        log: alog.with({ component: "services" }),
      });
    }, (e) => alog.error("service watch could not start", { error: e }));
  }

  const wait = (ms?: number) =>
    new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  /** Dials one tunnel through the hub URL (a load balancer may pick any replica) and logs in. */
  const dial = async (): Promise<{ session: HubSession; hello: HubHello; tunnel: TunnelStream }> => {
    const tunnel = await dialTunnel(cfg.hubUrl, { ca: cfg.ca, proxy });
    const session = await connectHub(tunnel, {
      cluster: cfg.cluster,
      token: cfg.token,
      hubFingerprint: cfg.hubFingerprint,
      keepaliveMs: cfg.keepaliveMs,
      hello: {
        version: agentVersion,
        agentId: id,
        endpoints: [...endpoints.keys()],
        authModes: cfg.kubernetes?.modes ?? [],
      },
      log: alog,
    });
    try {
      const hello = await timeout(session.hubHello, helloTimeoutMs, "the hub sent no hello");
      return { session, hello, tunnel };
    } catch (e) {
      session.close();
      throw e;
    }
  };

  /** Takes a new tunnel into service: handlers, endpoints, and its end. */
  const adopt = async (session: HubSession, hello: HubHello, stream: TunnelStream) => {
    const t: Tunnel = { session, replica: hello.replica, leaving: false, since: Date.now() };
    tunnels.add(t);
    metrics?.hubConnect("ok");
    metrics?.tunnelUp(stream);
    replicas = hello.replicas;
    session.onControl((msg) => {
      try {
        if (msg.type === "reconnect") {
          const { reason } = parseReconnect(msg);
          // The tunnel keeps serving until the hub closes it; a replacement is dialed at once.
          alog.info("hub asked for a reconnect", { reason, replica: t.replica });
          if (!t.leaving) {
            t.leaving = true;
            skipWait = true;
            wake();
          }
          return;
        }
        if (msg.type === "replicas") {
          replicas = parseReplicasUpdate(msg).replicas;
          alog.info("replica count changed", { replicas, tunnels: tunnels.size });
          wake();
          return;
        }
      } catch (e) {
        alog.warn("hub broke the control protocol", { error: e, replica: t.replica });
        session.close();
        return;
      }
      for (const h of controlHandlers) h(msg);
    });
    void session.closed.then((reason) => {
      tunnels.delete(t);
      metrics?.tunnelDown(stream);
      alog.warn("disconnected from hub", { reason, replica: t.replica, tunnels: tunnels.size });
      if (tunnels.size === 0) backoff.connectionLived(Date.now() - t.since);
      needDelay = true;
      wake();
    });
    for (const [name, ep] of endpoints) await session.publish(name, ep);
    for (const h of connectedHandlers) h();
    alog.info("connected to hub", {
      hub: redactUrl(cfg.hubUrl.toString()),
      via: proxy ? redactUrl(proxy.toString()) : "direct",
      replica: hello.replica,
      replicas: hello.replicas,
      tunnels: tunnels.size,
      endpoints: [...endpoints.keys()],
    });
  };

  const loop = async () => {
    let refusals = 0;
    while (!stopped) {
      if (staying().length >= wanted()) {
        for (const p of parked.splice(0)) p.close();
        // Enough tunnels: sleep until one ends, the hub asks for a move, or the replica count changes.
        await wait();
        continue;
      }
      if (needDelay) {
        needDelay = false;
        const delay = skipWait ? 0 : (tunnels.size === 0 ? backoff : spread).next();
        skipWait = false;
        if (delay > 0) {
          alog.info("reconnecting", {
            inMs: delay,
            attempt: (tunnels.size === 0 ? backoff : spread).attempts,
            tunnels: tunnels.size,
          });
          await wait(delay);
          continue;
        }
      }
      skipWait = false;
      try {
        const { session, hello, tunnel } = await dial();
        refusals = 0;
        if (stopped) {
          session.close();
          break;
        }
        if ([...tunnels].some((t) => t.replica === hello.replica)) {
          // The load balancer sent this dial to a replica the agent already holds. The tunnel is kept
          // (serving nothing) until a dial reaches another replica: a least-connections balancer would
          // otherwise send every retry back to the same replica, and a round-robin one can fall in step
          // with other agents' retries.
          alog.info("duplicate tunnel parked", { replica: hello.replica, replicas: hello.replicas });
          metrics?.hubConnect("duplicate");
          replicas = hello.replicas;
          parked.push(session);
          if (parked.length > maxParked) parked.shift()!.close();
          needDelay = true;
          continue;
        }
        for (const p of parked.splice(0)) p.close();
        await adopt(session, hello, tunnel);
        spread = new Backoff({ baseMs: 1000, capMs: cfg.backoffCapMs, resetAfterMs: 60_000 });
        // Spread the next dial a little, so a fleet that just connected does not dial again in step.
        needDelay = staying().length < wanted();
      } catch (e) {
        if (e instanceof HostKeyMismatchError) throw e;
        metrics?.hubConnect(e instanceof AuthRefusedError ? "refused" : "unreachable");
        if (e instanceof AuthRefusedError) {
          refusals++;
          const fields = { error: e, refusalsInARow: refusals, hint: "check --cluster and the join token" };
          if (refusals >= loudAfterRefusals) alog.error("hub keeps refusing this agent", fields);
          else alog.warn("hub refused this agent", fields);
        } else {
          alog.warn("cannot reach hub", {
            hub: redactUrl(cfg.hubUrl.toString()),
            error: e,
            tunnels: tunnels.size,
          });
        }
        needDelay = true;
      }
    }
  };

  let listener: MetricsListener | undefined;
  if (metrics && cfg.metricsListen) {
    const { host, port } = cfg.metricsListen;
    startMetricsListener(host, port, metrics.registry, alog).then((l) => {
      listener = l;
      if (stopped) void l.close();
      alog.info("metrics listening", { listen: `${host}:${l.port}` });
    }, (e) => alog.error("metrics listener not started", { listen: `${host}:${port}`, error: e }));
  }
  const done = loop();
  return {
    reconnectNow: () => {
      skipWait = true;
      needDelay = true;
      for (const t of tunnels) t.session.close();
      for (const p of parked.splice(0)) p.close();
      wake();
    },
    stop: () => {
      stopped = true;
      void listener?.close();
      kube?.close();
      stopServices?.();
      void catalog?.stop();
      for (const t of tunnels) t.session.close();
      for (const p of parked.splice(0)) p.close();
      wake();
    },
    done,
  };
}

/** One tunnel to one hub replica. */
interface Tunnel {
  session: HubSession;
  replica: string;
  /** The hub asked this tunnel to move; it serves on until the hub closes it but is being replaced. */
  leaving: boolean;
  since: number;
}

/** Rejects with `message` when `p` takes longer than `ms`. */
function timeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
