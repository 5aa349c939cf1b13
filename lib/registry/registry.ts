/**
 * The registry: which clusters exist, their join-token hashes, and hub settings. An interface, so the
 * YAML-file backend can be joined later by one on the Kubernetes API (for several hub replicas).
 * @module
 */

/** A cluster known to the hub. */
export interface ClusterRecord {
  /** DNS label, also the SSH user name its agents log in with. */
  name: string;
  /** `sha256:` hash of the current join token. */
  tokenHash: string;
  /** When the cluster was added (ISO 8601). */
  createdAt: string;
  /** When the token was last rotated (ISO 8601). */
  tokenRotatedAt?: string;
  /** How user identity reaches the cluster (default `impersonate`). */
  mode?: AuthMode;
  /** A dedicated hub port that serves only this cluster, for clients that cannot use a path prefix. */
  port?: number;
  /** Labels (Kubernetes key and value syntax) that access rules select clusters by. */
  labels?: Record<string, string>;
}

/** How the hub passes user identity to a cluster. */
export type AuthMode = "impersonate" | "passthrough";

/** A person or program that uses the hub. */
export interface UserRecord {
  /** User name; becomes `Impersonate-User`. */
  name: string;
  /** Groups; become `Impersonate-Group`. */
  groups: string[];
  /** `sha256:` hash of the user's bearer token, when the user has one. */
  tokenHash?: string;
  /** Extra attributes (key → values); become `Impersonate-Extra-KEY`, as `user.extra` in the cluster. */
  extra?: Record<string, string[]>;
  createdAt: string;
  /**
   * Client certificates of this user carry this value (12 hex digits) at the start of their serial
   * number; a new value — the user re-added, or `user revoke-certs` — revokes every certificate issued
   * before. Records written before epochs existed have none: their certificates are checked by name
   * until the first revoke-certs.
   */
  certEpoch?: string;
}

/**
 * One authorization rule: these users and groups may reach the clusters it selects. A rule has name globs,
 * a label selector, or both; with both, a cluster must match a glob and the selector.
 */
export interface AccessRule {
  users?: string[];
  groups?: string[];
  /** Glob patterns on cluster names (`*` and `?`). */
  clusters?: string[];
  /** A Kubernetes label selector on cluster labels, e.g. `env in (prod,staging),!legacy`. */
  clusterSelector?: string;
}

/** Hub-wide settings kept in the registry. */
export interface HubSettings {
  /** The tunnel URL agents are told to dial, e.g. `wss://hub.example.com:8443/tunnel`. */
  publicUrl?: string;
  /** Lifetime of client certificates in kubeconfigs when `--ttl` is not given, e.g. `8h` (default 8h). */
  clientCertTtl?: string;
  /** The longest `--ttl` a kubeconfig may ask for, e.g. `24h` (default 8h). */
  clientCertMaxTtl?: string;
}

/** A public hub port given to one port of a cluster's LoadBalancer Service. */
export interface LoadBalancerPort {
  cluster: string;
  /** `NAMESPACE/NAME` of the Service. */
  service: string;
  /** The Service port. */
  port: number;
  protocol: "TCP" | "UDP";
  /** The hub port that serves it. */
  publicPort: number;
}

/** Everything the registry holds. */
export interface RegistryData {
  version: 1;
  settings: HubSettings;
  clusters: ClusterRecord[];
  users: UserRecord[];
  access: AccessRule[];
  loadBalancers: LoadBalancerPort[];
}

/** Storage of the registry. Writers see a consistent snapshot: `update` is read-modify-write under a lock. */
export interface Registry {
  /** The current contents. */
  read(): Promise<RegistryData>;
  /** Applies `change` to the current contents and stores the result atomically; returns what `change` returned. */
  update<T>(change: (data: RegistryData) => T): Promise<T>;
  /**
   * Calls `onChange` with fresh contents soon after starting and whenever a writer changes the registry.
   * Returns a stop function; what it returns settles once no read of the registry is in flight any more.
   */
  watch(onChange: (data: RegistryData) => void, intervalMs?: number): () => Promise<void>;
}

/** An empty registry. */
export function emptyRegistry(): RegistryData {
  return { version: 1, settings: {}, clusters: [], users: [], access: [], loadBalancers: [] };
}
