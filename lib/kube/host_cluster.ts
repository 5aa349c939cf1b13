/**
 * The host cluster: the Kubernetes API the hub keeps its state in (when run with `--registry kubernetes`).
 * One place builds the client configuration, from a kubeconfig file or, inside a pod, from the
 * ServiceAccount files and `KUBERNETES_SERVICE_HOST`/`_PORT`; everything else that talks to the host
 * cluster (registry, shared hub material, later replica leases) takes a {@linkcode HostCluster}.
 *
 * The CA is always handed to TLS explicitly (`caData`), so no system trust store is read.
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import { ConfigError } from "../config/mod.ts";

/** Where the ServiceAccount files of a pod are. */
export const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How to reach the host cluster. */
export interface HostClusterOptions {
  /** A kubeconfig file (its current context); without it, the in-cluster ServiceAccount is used. */
  kubeconfig?: string | undefined;
  /** Namespace of the hub's objects; default: the kubeconfig context's, the pod's, or `tower-system`. */
  namespace?: string | undefined;
  /** ServiceAccount dir for in-cluster use (default {@linkcode serviceAccountDir}; tests point it elsewhere). */
  saDir?: string | undefined;
  /** `KUBERNETES_SERVICE_HOST` and `_PORT` for in-cluster use (read from the environment by the caller). */
  serviceHost?: string | undefined;
  servicePort?: string | undefined;
}

/** A configured client of the host cluster and the namespace the hub works in. */
export interface HostCluster {
  /** Client configuration: `kc.makeApiClient(k8s.CoreV1Api)`, informers: `makeInformer` of lib/kube/informer.ts. */
  kc: k8s.KubeConfig;
  /** The namespace every hub object lives in. */
  namespace: string;
  /** The API server URL (for messages). */
  server: string;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function readText(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new ConfigError(
        `${what} ${path}: this permission set may not read it (the server set reads /etc/tower, /var/lib/tower, ` +
          "/tmp/tower, ./.tower and the pod's ServiceAccount dir; put the file there)",
      );
    }
    throw new ConfigError(`${what} ${path}: ${(e as Error).message}`);
  }
}

/** A client of the host cluster from `opts`; throws ConfigError with what to fix. */
export function hostCluster(opts: HostClusterOptions): HostCluster {
  const kc = new k8s.KubeConfig();
  let namespace = opts.namespace;
  if (opts.kubeconfig) {
    try {
      kc.loadFromString(readText(opts.kubeconfig, "--kubeconfig"));
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      throw new ConfigError(`--kubeconfig ${opts.kubeconfig}: not a kubeconfig: ${(e as Error).message}`);
    }
    const dir = opts.kubeconfig.replace(/\/[^/]*$/, "") || ".";
    const ctx = kc.getContextObject(kc.getCurrentContext());
    const cluster = kc.getCurrentCluster();
    const user = kc.getCurrentUser();
    if (!ctx || !cluster || !user) {
      throw new ConfigError(`--kubeconfig ${opts.kubeconfig}: its current context names no cluster or user`);
    }
    const abs = (p: string | undefined) => p && !p.startsWith("/") ? `${dir}/${p}` : p;
    // Files named by the kubeconfig are read here, once, so TLS gets the CA and client pair as data.
    const data = (file: string | undefined, inline: string | undefined, what: string) =>
      inline ?? (file ? btoa(readText(abs(file)!, what)) : undefined);
    const caData = data(cluster.caFile, cluster.caData, "certificate-authority");
    if (!caData && !cluster.server.startsWith("http:")) {
      throw new ConfigError(
        `--kubeconfig ${opts.kubeconfig}: cluster '${cluster.name}' names no certificate-authority; the hub ` +
          "does not fall back to the system trust store",
      );
    }
    kc.loadFromOptions({
      clusters: [{ name: cluster.name, server: cluster.server, skipTLSVerify: false, caData }],
      users: [{
        ...user,
        certData: data(user.certFile, user.certData, "client-certificate"),
        keyData: data(user.keyFile, user.keyData, "client-key"),
        certFile: undefined,
        keyFile: undefined,
      }],
      contexts: [{ ...ctx, cluster: cluster.name, user: user.name }],
      currentContext: ctx.name,
    });
    namespace ??= ctx.namespace;
  } else {
    const saDir = opts.saDir ?? serviceAccountDir;
    if (!opts.serviceHost || !opts.servicePort) {
      throw new ConfigError(
        "--registry kubernetes needs --kubeconfig FILE, or to run in a pod (KUBERNETES_SERVICE_HOST and " +
          "KUBERNETES_SERVICE_PORT are not set)",
      );
    }
    const host = opts.serviceHost.includes(":") ? `[${opts.serviceHost}]` : opts.serviceHost;
    const caPem = readText(`${saDir}/ca.crt`, "ServiceAccount CA");
    readText(`${saDir}/token`, "ServiceAccount token");
    kc.loadFromOptions({
      clusters: [{ name: "host", server: `https://${host}:${opts.servicePort}`, caData: btoa(caPem) }],
      // client-node re-reads a token file every minute, so a rotated projected token keeps working.
      users: [{ name: "hub", authProvider: { name: "tokenFile", config: { tokenFile: `${saDir}/token` } } }],
      contexts: [{ name: "host", cluster: "host", user: "hub" }],
      currentContext: "host",
    });
    if (!namespace) {
      try {
        namespace = Deno.readTextFileSync(`${saDir}/namespace`).trim();
      } catch {
        // no namespace file: the default below
      }
    }
  }
  namespace ||= "tower-system";
  if (!dnsLabel.test(namespace)) throw new ConfigError(`--namespace '${namespace}' is not a DNS label`);
  return { kc, namespace, server: kc.getCurrentCluster()!.server };
}

/** The HTTP status of a failed client-node call, or undefined. */
export function apiStatus(e: unknown): number | undefined {
  const code = (e as { code?: unknown; statusCode?: unknown })?.code ??
    (e as { statusCode?: unknown })?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** A short message of a failed client-node call (the API's Status message when there is one). */
export function apiMessage(e: unknown): string {
  const body = (e as { body?: unknown })?.body;
  if (typeof (body as { message?: unknown })?.message === "string") {
    return (body as { message: string }).message;
  }
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body);
      if (typeof parsed?.message === "string") return parsed.message;
    } catch {
      // not JSON
    }
  }
  const cause = (e as { cause?: { message?: string } })?.cause?.message;
  const message = (e as Error)?.message ?? String(e);
  return cause ? `${message}: ${cause}` : message;
}
