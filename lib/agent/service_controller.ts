/**
 * Decides which Service ports the agent publishes, and runs the LoadBalancer controller.
 *
 * - Services the operator allowed (namespaces + label selector; none by default) are published for hub
 *   users as `svc/NS/NAME:PORT` (and `:PORTNAME`), TCP only.
 * - Services of type LoadBalancer with Tower's `loadBalancerClass` (optionally: with no class) are
 *   published as `lb/NS/NAME:PORT` (TCP) and `lb/NS/NAME:PORT/udp`, and their ports are sent to the hub
 *   (`lb-sync` on the control stream). The hub answers with the public ports it allocated (`lb-status`);
 *   the controller writes them to `status.loadBalancer.ingress`, and reports a port that could not be
 *   allocated as a Warning Event and a `TowerPortsAllocated=False` condition.
 * @module
 */

import net from "node:net";
import * as k8s from "@kubernetes/client-node";
import type { Logger } from "../log/log.ts";
import type { ControlMessage, Endpoint } from "../tunnel/mod.ts";
import { type ApiAccess, kubeConfigFor, type ServiceCatalog } from "./service_catalog.ts";
import { serviceTcpEndpoint, serviceUdpEndpoint, UdpFlowBudget } from "./service_endpoints.ts";
import { lbEndpointName, serviceEndpointName } from "../kube/endpoint_names.ts";

/** Which Services hub users may reach through the agent. */
export interface ServiceAllowlist {
  /** Namespaces (`*` = all). Empty: no Service is served to users. */
  namespaces: string[];
  /** Labels a Service must carry (all of them). */
  selector: Record<string, string>;
}

/** The agent's connection to the hub, as the controller needs it. */
export interface HubLink {
  send(msg: ControlMessage): boolean;
  onControl(handler: (msg: ControlMessage) => void): void;
  onConnected(handler: () => void): void;
}

/** Settings of the controller. */
export interface ServiceControllerOptions {
  catalog: ServiceCatalog;
  access: ApiAccess;
  allow: ServiceAllowlist;
  /** `spec.loadBalancerClass` Tower serves. */
  lbClass: string;
  /** Also serve LoadBalancer Services that name no class. */
  lbWithoutClass: boolean;
  /** Replaces the set of Service endpoints the agent publishes. */
  publish(endpoints: Map<string, Endpoint>): void;
  hub: HubLink;
  log: Logger;
}

/** One LoadBalancer Service as sent to the hub. */
export interface LbService {
  service: string;
  ports: { port: number; protocol: "TCP" | "UDP" }[];
}

/** The hub's answer for one Service. */
export interface LbServiceStatus {
  service: string;
  ports: { port: number; protocol: "TCP" | "UDP"; publicPort?: number; error?: string }[];
}

/** Services an lb-status may name: as many as a cluster could sensibly expose. */
const maxStatusServices = 10_000;

/**
 * Validates the hub's `lb-status` before any of it reaches a Service status: an address that is an IP or
 * a DNS name, Services named `NS/NAME`, ports in range, short error texts. Undefined when malformed.
 */
export function parseLbStatus(
  msg: Record<string, unknown>,
): { address?: { ip?: string; hostname?: string }; services: LbServiceStatus[] } | undefined {
  const port = (v: unknown) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;
  let address: { ip?: string; hostname?: string } | undefined;
  const a = msg.address as { ip?: unknown; hostname?: unknown } | undefined;
  if (a !== undefined) {
    if (!a || typeof a !== "object") return undefined;
    if (typeof a.ip === "string" && net.isIP(a.ip)) address = { ip: a.ip };
    else if (
      typeof a.hostname === "string" && a.hostname.length <= 253 &&
      /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(a.hostname)
    ) address = { hostname: a.hostname };
    else return undefined;
  }
  const raw = msg.services ?? [];
  if (!Array.isArray(raw) || raw.length > maxStatusServices) return undefined;
  const services: LbServiceStatus[] = [];
  for (const s of raw) {
    if (
      !s || typeof s.service !== "string" ||
      !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(s.service)
    ) {
      return undefined;
    }
    if (!Array.isArray(s.ports) || s.ports.length > 1000) return undefined;
    const ports: LbServiceStatus["ports"] = [];
    for (const p of s.ports) {
      if (!p || !port(p.port) || (p.protocol !== "TCP" && p.protocol !== "UDP")) return undefined;
      if (p.publicPort !== undefined && !port(p.publicPort)) return undefined;
      if (p.error !== undefined && (typeof p.error !== "string" || p.error.length > 1024)) return undefined;
      ports.push({
        port: p.port,
        protocol: p.protocol,
        ...(p.publicPort !== undefined ? { publicPort: p.publicPort } : {}),
        ...(p.error !== undefined ? { error: p.error } : {}),
      });
    }
    services.push({ service: s.service, ports });
  }
  return { ...(address ? { address } : {}), services };
}

/** Starts reconciling; returns a stop function. */
export function startServiceController(opts: ServiceControllerOptions): () => void {
  const { catalog, log } = opts;
  let lastSync = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  let address: { ip?: string; hostname?: string } = {};
  const statuses = new Map<string, LbServiceStatus>();
  const reportedErrors = new Map<string, string>();
  const udpFlows = new UdpFlowBudget();

  const isLb = (s: k8s.V1Service) =>
    s.spec?.type === "LoadBalancer" &&
    (s.spec.loadBalancerClass === opts.lbClass || (!s.spec.loadBalancerClass && opts.lbWithoutClass));
  const allowed = (s: k8s.V1Service) => {
    const ns = s.metadata?.namespace ?? "";
    if (!opts.allow.namespaces.includes("*") && !opts.allow.namespaces.includes(ns)) return false;
    const labels = s.metadata?.labels ?? {};
    return Object.entries(opts.allow.selector).every(([k, v]) => labels[k] === v);
  };

  const lbServices = (): LbService[] =>
    catalog.services().filter(isLb).map((s) => ({
      service: `${s.metadata!.namespace}/${s.metadata!.name}`,
      ports: (s.spec?.ports ?? []).map((p) => ({
        port: p.port,
        protocol: (p.protocol ?? "TCP") as "TCP" | "UDP",
      }))
        .filter((p) => p.protocol === "TCP" || p.protocol === "UDP"),
    })).sort((a, b) => a.service.localeCompare(b.service));

  const reconcile = () => {
    timer = undefined;
    const endpoints = new Map<string, Endpoint>();
    for (const s of catalog.services()) {
      const namespace = s.metadata!.namespace!;
      const name = s.metadata!.name!;
      const lb = isLb(s);
      const forUsers = allowed(s);
      if (!lb && !forUsers) continue;
      for (const p of s.spec?.ports ?? []) {
        const protocol = p.protocol ?? "TCP";
        const ref = { namespace, name, port: p.port };
        // Public LoadBalancer traffic and hub users' Service access are published under separate names,
        // so a LoadBalancer Service is not reachable through the user path unless the allowlist says so.
        if (lb && protocol === "UDP") {
          endpoints.set(
            lbEndpointName(`${namespace}/${name}`, p.port, "UDP"),
            serviceUdpEndpoint(catalog, ref, udpFlows, log),
          );
        }
        if (protocol !== "TCP") continue;
        const ep = serviceTcpEndpoint(catalog, ref, log);
        if (lb) endpoints.set(lbEndpointName(`${namespace}/${name}`, p.port, "TCP"), ep);
        if (!forUsers) continue;
        endpoints.set(serviceEndpointName(namespace, name, p.port), ep);
        if (p.name) endpoints.set(serviceEndpointName(namespace, name, p.name), ep);
      }
    }
    opts.publish(endpoints);
    const services = lbServices();
    const text = JSON.stringify(services);
    if (text !== lastSync && opts.hub.send({ type: "lb-sync", services })) lastSync = text;
    for (const st of statuses.values()) void writeStatus(st);
  };
  const schedule = () => {
    if (!timer) timer = setTimeout(reconcile, 100);
  };

  /** Writes the hub's allocation into the Service status when it differs, and reports failures. */
  const writeStatus = async (st: LbServiceStatus) => {
    const [namespace, name] = st.service.split("/") as [string, string];
    const svc = catalog.service(namespace, name);
    if (!svc || !isLb(svc)) return;
    const allocated = st.ports.filter((p) => p.publicPort);
    const failed = st.ports.filter((p) => p.error);
    const ingress: k8s.V1LoadBalancerIngress[] = allocated.length
      ? [{
        ...address,
        ports: st.ports.map((p) => ({
          port: p.publicPort ?? p.port,
          protocol: p.protocol,
          ...(p.error ? { error: "AllocationFailed" } : {}),
        })),
      }]
      : [];
    const condition: k8s.V1Condition = {
      type: "TowerPortsAllocated",
      status: failed.length ? "False" : "True",
      reason: failed.length ? "AllocationFailed" : "Allocated",
      message: failed.length
        ? failed.map((p) => `${p.port}/${p.protocol}: ${p.error}`).join("; ")
        : `public ports ${allocated.map((p) => `${p.port}/${p.protocol}→${p.publicPort}`).join(", ")}`,
      lastTransitionTime: new Date(),
      observedGeneration: svc.metadata?.generation ?? 0,
    };
    const same = JSON.stringify(svc.status?.loadBalancer?.ingress ?? []) === JSON.stringify(ingress) &&
      svc.status?.conditions?.some((c) =>
        c.type === condition.type && c.status === condition.status && c.message === condition.message
      );
    if (!same) {
      try {
        await patchStatus(namespace, name, ingress, condition);
        log.info("service status updated", { service: st.service, ingress: JSON.stringify(ingress) });
      } catch (e) {
        log.warn("service status not updated", { service: st.service, error: e });
      }
    }
    if (failed.length && reportedErrors.get(st.service) !== condition.message) {
      reportedErrors.set(st.service, condition.message);
      await emitEvent(svc, "AllocationFailed", condition.message).catch((e) =>
        log.warn("event not written", { service: st.service, error: e })
      );
    } else if (!failed.length) reportedErrors.delete(st.service);
  };

  const patchStatus = async (
    namespace: string,
    name: string,
    ingress: k8s.V1LoadBalancerIngress[],
    condition: k8s.V1Condition,
  ) => {
    const core = (await kubeConfigFor(opts.access)).makeApiClient(k8s.CoreV1Api);
    for (let attempt = 0;; attempt++) {
      const fresh = await core.readNamespacedServiceStatus({ name, namespace });
      const conditions = (fresh.status?.conditions ?? []).filter((c) => c.type !== condition.type);
      fresh.status = { ...fresh.status, loadBalancer: { ingress }, conditions: [...conditions, condition] };
      try {
        await core.replaceNamespacedServiceStatus({ name, namespace, body: fresh });
        return;
      } catch (e) {
        // A concurrent writer (another agent of this cluster) won; read again and retry.
        if (attempt >= 3 || (e as { code?: number }).code !== 409) throw e;
      }
    }
  };

  const emitEvent = async (svc: k8s.V1Service, reason: string, message: string) => {
    const core = (await kubeConfigFor(opts.access)).makeApiClient(k8s.CoreV1Api);
    const now = new Date();
    await core.createNamespacedEvent({
      namespace: svc.metadata!.namespace!,
      body: {
        metadata: { generateName: `${svc.metadata!.name}.`, namespace: svc.metadata!.namespace! },
        involvedObject: {
          apiVersion: "v1",
          kind: "Service",
          name: svc.metadata!.name!,
          namespace: svc.metadata!.namespace!,
          uid: svc.metadata!.uid!,
        },
        reason,
        message,
        type: "Warning",
        source: { component: "tower-agent" },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  };

  opts.hub.onControl((msg) => {
    if (msg.type !== "lb-status") return;
    const parsed = parseLbStatus(msg);
    if (!parsed) {
      log.warn("malformed lb-status from the hub ignored");
      return;
    }
    if (parsed.address) address = parsed.address;
    statuses.clear();
    for (const st of parsed.services) {
      statuses.set(st.service, st);
      void writeStatus(st);
    }
  });
  opts.hub.onConnected(() => {
    lastSync = "";
    schedule();
  });
  catalog.onChange(schedule);
  schedule();
  return () => {
    if (timer) clearTimeout(timer);
  };
}
