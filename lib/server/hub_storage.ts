/**
 * Where a hub keeps its state: the registry and its material (host key, CA, serving certificate).
 * `file`: the YAML registry and files in the data dir (one hub, nothing else needed). `kubernetes`:
 * custom resources and Secrets in a namespace of a host cluster (several replicas can share it).
 * The data dir is used by both for the live status file.
 * @module
 */

import { ConfigError } from "../config/mod.ts";
import type { Logger } from "../log/log.ts";
import { type HostCluster, hostCluster, type HostClusterOptions } from "../kube/host_cluster.ts";
import type { Registry } from "../registry/mod.ts";
import { KubernetesRegistry } from "../registry/k8s_registry.ts";
import { DataDir } from "./data_dir.ts";
import type { HubMaterial } from "./hub_material.ts";
import { secretMaterial } from "./secret_material.ts";

/** The registry backends. */
export type RegistryKind = "file" | "kubernetes";

/** How to open a hub's storage. */
export interface StorageOptions {
  registry: RegistryKind;
  dataDir: string;
  /** For `kubernetes`: how to reach the host cluster. */
  host?: HostClusterOptions;
  log: Logger;
}

/** A hub's opened storage. */
export interface HubStorage {
  kind: RegistryKind;
  /** The data dir (the admin sockets live there whatever the registry; with `file`, everything). */
  dataDir: DataDir;
  registry: Registry;
  material: HubMaterial;
  /** For `kubernetes`: the host cluster and the registry on it. */
  kubernetes?: { host: HostCluster; registry: KubernetesRegistry };
  close(): Promise<void>;
  /** Closes it at the end of an `await using` scope. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Flags every `main_server.ts` command takes to find the hub's storage. */
export const storageFlags = {
  "data-dir": { type: "string" },
  registry: { type: "string" },
  kubeconfig: { type: "string" },
  namespace: { type: "string" },
} as const;

/**
 * How to open the storage the flags name: the data dir defaults to `$TOWER_DATA_DIR`, then `./.tower`;
 * an in-cluster hub finds its host cluster through the pod's ServiceAccount and environment.
 */
export function storageOptions(
  values: {
    "data-dir"?: string | undefined;
    registry?: string | undefined;
    kubeconfig?: string | undefined;
    namespace?: string | undefined;
  },
  env: (name: string) => string | undefined,
): Omit<StorageOptions, "log"> {
  return {
    registry: parseRegistryKind(values.registry),
    dataDir: values["data-dir"] ?? env("TOWER_DATA_DIR") ?? "./.tower",
    host: {
      kubeconfig: values.kubeconfig,
      namespace: values.namespace,
      saDir: env("TOWER_SA_DIR"),
      serviceHost: env("KUBERNETES_SERVICE_HOST"),
      servicePort: env("KUBERNETES_SERVICE_PORT"),
    },
  };
}

/** Checks a `--registry` value. */
export function parseRegistryKind(value: unknown): RegistryKind {
  if (value === undefined || value === "file") return "file";
  if (value === "kubernetes") return "kubernetes";
  throw new ConfigError(`--registry '${value}' must be file or kubernetes`);
}

/** Opens the storage `opts` names; for `kubernetes`, once the registry has listed everything. */
export async function openStorage(opts: StorageOptions): Promise<HubStorage> {
  if (opts.registry === "file") {
    if (opts.host?.kubeconfig || opts.host?.namespace) {
      throw new ConfigError("--kubeconfig and --namespace need --registry kubernetes");
    }
    const dataDir = new DataDir(opts.dataDir);
    const registry = await dataDir.registry();
    const close = () => Promise.resolve();
    return {
      kind: "file",
      dataDir,
      registry,
      material: dataDir,
      close,
      [Symbol.asyncDispose]: close,
    };
  }
  const host = hostCluster(opts.host ?? {});
  const registry = new KubernetesRegistry(host, opts.log);
  await registry.start();
  return {
    kind: "kubernetes",
    dataDir: new DataDir(opts.dataDir),
    registry,
    material: secretMaterial(host),
    kubernetes: { host, registry },
    close: () => registry.close(),
    [Symbol.asyncDispose]: () => registry.close(),
  };
}
