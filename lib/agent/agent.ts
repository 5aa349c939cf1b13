/**
 * The agent's life: dial the hub, log in, publish endpoints, serve channels until the session ends,
 * then reconnect with exponential backoff and full jitter. Only a configuration error (a hub host key
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
  type HubSession,
  proxyFor,
  redactUrl,
} from "../tunnel/mod.ts";
import type { AgentConfig } from "./agent_config.ts";
import { tcpEndpoint } from "./endpoints.ts";
import { kubeEndpoint } from "./kube_endpoint.ts";
import { kubernetesEndpoint } from "../kube/endpoint_names.ts";
import { ServiceCatalog } from "./service_catalog.ts";
import { startServiceController } from "./service_controller.ts";

/** Agent version reported to the hub. */
export const agentVersion = "0.1.0";

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

/** Starts the agent loop. */
export function startAgent(cfg: AgentConfig, log: Logger): Agent {
  const id = `${hostname()}-${crypto.randomUUID().slice(0, 8)}`;
  const endpoints = new Map<string, Endpoint>();
  for (const p of cfg.publish) endpoints.set(p.name, tcpEndpoint(p.host, p.port));
  const kube = cfg.kubernetes
    ? kubeEndpoint({ ...cfg.kubernetes, log: log.with({ endpoint: "kubernetes" }) })
    : undefined;
  if (kube) endpoints.set(kubernetesEndpoint, kube);
  const backoff = new Backoff({ baseMs: 1000, capMs: cfg.backoffCapMs, resetAfterMs: 60_000 });
  let session: HubSession | undefined;
  let stopped = false;
  let skipWait = false;
  let wake: () => void = () => {};
  const proxy = proxyFor(cfg.hubUrl, cfg.proxyEnv);
  const alog = log.with({ cluster: cfg.cluster, agent: id });

  const controlHandlers = new Set<(msg: ControlMessage) => void>();
  const connectedHandlers = new Set<() => void>();
  /** Endpoints that come and go with the cluster's Services; published and withdrawn on the live session. */
  let serviceNames = new Set<string>();
  const setServiceEndpoints = (next: Map<string, Endpoint>) => {
    for (const name of serviceNames) {
      if (next.has(name)) continue;
      endpoints.delete(name);
      void session?.unpublish(name);
    }
    for (const [name, ep] of next) {
      const isNew = !endpoints.has(name);
      endpoints.set(name, ep);
      if (isNew) {
        session?.publish(name, ep).catch((e) => alog.warn("publish failed", { endpoint: name, error: e }));
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
          send: (msg) => session?.send(msg) ?? false,
          onControl: (h) => void controlHandlers.add(h),
          onConnected: (h) => void connectedHandlers.add(h),
        },
        log: alog.with({ component: "services" }),
      });
    }, (e) => alog.error("service watch could not start", { error: e }));
  }

  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const loop = async () => {
    let refusals = 0;
    while (!stopped) {
      let connectedAt: number | undefined;
      try {
        const tunnel = await dialTunnel(cfg.hubUrl, { ca: cfg.ca, proxy });
        const s = await connectHub(tunnel, {
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
        session = s;
        connectedAt = Date.now();
        refusals = 0;
        s.onControl((msg) => {
          if (msg.type === "reconnect") {
            alog.info("hub asked for a reconnect", { reason: msg.reason });
            s.close();
          }
          for (const h of controlHandlers) h(msg);
        });
        for (const [name, ep] of endpoints) await s.publish(name, ep);
        for (const h of connectedHandlers) h();
        alog.info("connected to hub", {
          hub: cfg.hubUrl.toString(),
          via: proxy ? redactUrl(proxy.toString()) : "direct",
          endpoints: [...endpoints.keys()],
        });
        if (stopped) s.close();
        const reason = await s.closed;
        alog.warn("disconnected from hub", { reason });
      } catch (e) {
        if (e instanceof HostKeyMismatchError) throw e;
        if (e instanceof AuthRefusedError) {
          refusals++;
          const fields = { error: e, refusalsInARow: refusals, hint: "check --cluster and the join token" };
          if (refusals >= loudAfterRefusals) alog.error("hub keeps refusing this agent", fields);
          else alog.warn("hub refused this agent", fields);
        } else {
          alog.warn("cannot reach hub", { hub: cfg.hubUrl.toString(), error: e });
        }
        session?.close();
      } finally {
        session = undefined;
      }
      if (connectedAt !== undefined) backoff.connectionLived(Date.now() - connectedAt);
      if (stopped) break;
      const delay = skipWait ? 0 : backoff.next();
      skipWait = false;
      if (delay > 0) alog.info("reconnecting", { inMs: delay, attempt: backoff.attempts });
      await wait(delay);
    }
  };

  const done = loop();
  return {
    reconnectNow: () => {
      skipWait = true;
      if (session) session.close();
      else wake();
    },
    stop: () => {
      stopped = true;
      kube?.close();
      stopServices?.();
      void catalog?.stop();
      session?.close();
      wake();
    },
    done,
  };
}
