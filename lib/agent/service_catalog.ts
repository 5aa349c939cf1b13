/**
 * The agent's view of the cluster's Services and their ready endpoints, kept by
 * informers from lib/kube/informer.ts (list, then watch from the list's resourceVersion, relist on 410,
 * watches renewed by the server so a quiet cluster does not end them).
 * It answers "where may a channel to this service port go" and nothing else: only addresses found in
 * the Service's EndpointSlices are ever dialed.
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import { type Informer, makeInformer } from "../kube/informer.ts";
import type { Logger } from "../log/log.ts";

/** How to reach the API server as the agent's ServiceAccount (token re-read on every connect). */
export interface ApiAccess {
  apiserver: URL;
  caPem: string;
  tokenFile: string;
}

/** A client config for `access`, with the token as it is now on disk. */
export async function kubeConfigFor(access: ApiAccess): Promise<k8s.KubeConfig> {
  const token = (await Deno.readTextFile(access.tokenFile)).trim();
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{
      name: "cluster",
      server: access.apiserver.toString().replace(/\/$/, ""),
      caData: btoa(access.caPem),
    }],
    users: [{ name: "agent", token }],
    contexts: [{ name: "agent", cluster: "cluster", user: "agent" }],
    currentContext: "agent",
  });
  return kc;
}

/** An address and port to dial. */
export interface Backend {
  address: string;
  port: number;
}

/** Live Services and EndpointSlices of the whole cluster. */
export class ServiceCatalog {
  readonly #log: Logger;
  readonly #access: ApiAccess;
  #services: Informer<k8s.V1Service> | undefined;
  #slices: Informer<k8s.V1EndpointSlice> | undefined;
  #listeners = new Set<() => void>();
  #rr = new Map<string, number>();
  #stopped = false;

  constructor(access: ApiAccess, log: Logger) {
    this.#access = access;
    this.#log = log;
  }

  /** Starts both informers; resolves once both have listed. */
  async start(): Promise<void> {
    const kc = await kubeConfigFor(this.#access);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const discovery = kc.makeApiClient(k8s.DiscoveryV1Api);
    this.#services = makeInformer(kc, "/api/v1/services", () => core.listServiceForAllNamespaces());
    this.#slices = makeInformer(
      kc,
      "/apis/discovery.k8s.io/v1/endpointslices",
      () => discovery.listEndpointSliceForAllNamespaces(),
    );
    for (const inf of [this.#services, this.#slices] as k8s.Informer<k8s.KubernetesObject>[]) {
      for (const ev of ["add", "update", "delete"] as const) inf.on(ev, () => this.#changed());
      inf.on("error", (e: unknown) => {
        if (this.#stopped) return;
        this.#log.warn("service watch failed; restarting", { error: String((e as Error)?.message ?? e) });
        setTimeout(() => void (!this.#stopped && inf.start().catch(() => {})), 2000);
      });
    }
    await Promise.all([this.#services.start(), this.#slices.start()]);
    this.#changed();
  }

  /** Stops watching. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([this.#services?.stop(), this.#slices?.stop()]);
  }

  /** Registers a function called after any Service or EndpointSlice change. */
  onChange(listener: () => void): void {
    this.#listeners.add(listener);
  }

  /** Every Service. */
  services(): readonly k8s.V1Service[] {
    return this.#services?.list() ?? [];
  }

  /** One Service. */
  service(namespace: string, name: string): k8s.V1Service | undefined {
    return this.#services?.get(name, namespace);
  }

  /**
   * Ready backends of a Service port (`port` by number or name), rotated round-robin so successive
   * callers start at different backends. Not-ready and terminating endpoints are left out.
   */
  readyBackends(namespace: string, name: string, port: number | string, protocol: "TCP" | "UDP"): Backend[] {
    const svc = this.service(namespace, name);
    const sp = svc?.spec?.ports?.find((p) =>
      (typeof port === "number" ? p.port === port : p.name === port) && (p.protocol ?? "TCP") === protocol
    );
    if (!svc || !sp) return [];
    const out: Backend[] = [];
    for (const slice of this.#slices?.list(namespace) ?? []) {
      if (slice.metadata?.labels?.["kubernetes.io/service-name"] !== name) continue;
      if (slice.addressType === "FQDN") continue;
      const target = slice.ports?.find((p) =>
        (p.name ?? "") === (sp.name ?? "") && (p.protocol ?? "TCP") === protocol
      );
      const targetPort = target?.port ?? (typeof sp.targetPort === "number" ? sp.targetPort : sp.port);
      for (const ep of slice.endpoints ?? []) {
        if (ep.conditions?.ready === false || ep.conditions?.terminating === true) continue;
        for (const address of ep.addresses) out.push({ address, port: targetPort });
      }
    }
    const key = `${namespace}/${name}:${sp.port}/${protocol}`;
    const turn = this.#rr.get(key) ?? 0;
    this.#rr.set(key, turn + 1);
    if (!out.length) return out;
    const start = turn % out.length;
    return [...out.slice(start), ...out.slice(0, start)];
  }

  #changed(): void {
    for (const l of this.#listeners) l();
  }
}
