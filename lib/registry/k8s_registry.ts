/**
 * The registry on the Kubernetes API of a host cluster, for hubs that run there (several replicas share
 * it). Informers (list, then watch) keep a cache of Tower's objects in one namespace; `read` and `watch`
 * are served from that cache, so a change applied with kubectl reaches every hub within one watch event.
 *
 * `update` runs the caller's change on a snapshot of the cache, turns the difference into writes (one
 * object per record) and sends each with the resourceVersion it was read at (creates are
 * create-if-absent). When a write loses a race (409, or 404 for an object that went away) the update
 * waits until the cache has seen the winner and runs the change again on fresh data. A change must
 * therefore be written so that running it again on data that already holds its own earlier writes is
 * harmless (every change in the hub is: "add X unless present", "remove X", "set field").
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import type { Logger } from "../log/log.ts";
import { apiMessage, apiStatus, type HostCluster } from "../kube/host_cluster.ts";
import { type Informer, makeInformer } from "../kube/informer.ts";
import { validateRegistry } from "./file_registry.ts";
import type { AccessRule, ClusterRecord, Registry, RegistryData, UserRecord } from "./registry.ts";
import {
  accessFromObject,
  accessSpec,
  apiVersion,
  byName,
  clusterFromObject,
  clusterSpec,
  clusterTokenSecret,
  createdAtAnnotation,
  group,
  kinds,
  lbPortFromObject,
  lbPortName,
  lbPortSpec,
  managedLabels,
  newAccessName,
  rotatedAtAnnotation,
  settingsData,
  settingsFromConfigMap,
  settingsLabel,
  settingsName,
  type StoredData,
  type StoredObject,
  tokenLabel,
  userFromObject,
  userObjectName,
  userSpec,
  userTokenSecret,
  version,
} from "./k8s_resources.ts";

type Kind = keyof typeof kinds;
type Cache<T extends k8s.KubernetesObject> = Informer<T>;

/** True once an informer has listed (its ListWatch then knows a resourceVersion). */
const listed = (inf: object) => !!(inf as { latestResourceVersion?: () => string }).latestResourceVersion?.();

/** A write lost a race; `settled` tells when the cache has caught up with the winner. */
class StaleWrite extends Error {
  override name = "StaleWrite";
  constructor(message: string, readonly settled: () => boolean) {
    super(message);
  }
}

/** A snapshot of the cache plus where each record came from. */
interface Snapshot {
  data: RegistryData;
  /** JSON of each record as read, by kind and key. */
  before: Map<string, string>;
  /** Access rules as read: record object → object name. */
  accessNames: Map<AccessRule, string>;
  /** Users as read: user name → object name. */
  userObjects: Map<string, string>;
}

const maxAttempts = 10;
/** Tries of the first list of each resource (0.5 s, 1 s, … apart: about 30 s in all). */
const startAttempts = 10;
const settleMs = 5_000;

const json = (v: unknown) => JSON.stringify(v);

/** Registry stored as custom resources and Secrets in one namespace of a host cluster. */
export class KubernetesRegistry implements Registry {
  readonly #host: HostCluster;
  readonly #log: Logger;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;
  readonly #crs = new Map<Kind, Cache<StoredObject & k8s.KubernetesObject>>();
  #secrets: Cache<k8s.V1Secret> | undefined;
  #settings: Cache<k8s.V1ConfigMap> | undefined;
  readonly #events = new Set<() => void>();
  readonly #restarts = new Set<ReturnType<typeof setTimeout>>();
  readonly #backoff = new Map<object, number>();
  #stopped = false;
  /** API writes made so far (creates, replaces, deletes), for measurements and tests. */
  writes = 0;

  constructor(host: HostCluster, log: Logger) {
    this.#host = host;
    this.#log = log.with({ component: "registry" });
    this.#custom = host.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = host.kc.makeApiClient(k8s.CoreV1Api);
  }

  /** The namespace the registry lives in. */
  get namespace(): string {
    return this.#host.namespace;
  }

  /** Lists everything once (failing with what is missing: CRDs, RBAC) and starts the watches. */
  async start(): Promise<void> {
    const ns = this.#host.namespace;
    const informers: Cache<k8s.KubernetesObject>[] = [];
    for (const kind of Object.keys(kinds) as Kind[]) {
      const plural = kinds[kind].plural;
      const inf = makeInformer<StoredObject & k8s.KubernetesObject>(
        this.#host.kc,
        `/apis/${group}/${version}/namespaces/${ns}/${plural}`,
        () => this.#custom.listNamespacedCustomObject({ group, version, namespace: ns, plural }),
      );
      this.#crs.set(kind, inf);
      informers.push(inf);
    }
    this.#secrets = makeInformer(
      this.#host.kc,
      `/api/v1/namespaces/${ns}/secrets`,
      () => this.#core.listNamespacedSecret({ namespace: ns, labelSelector: tokenLabel }),
      tokenLabel,
    );
    this.#settings = makeInformer(
      this.#host.kc,
      `/api/v1/namespaces/${ns}/configmaps`,
      () => this.#core.listNamespacedConfigMap({ namespace: ns, labelSelector: settingsLabel }),
      settingsLabel,
    );
    informers.push(this.#secrets, this.#settings);
    const what = [...Object.values(kinds).map((k) => `${k.plural}.${group}`), "secrets", "configmaps"];
    await Promise.all(informers.map(async (inf, i) => {
      let failure: unknown;
      const onStartError = (e: unknown) => failure = e;
      inf.on("error", onStartError);
      // A transient failure (an API server starting, a CRD just created: "storage is (re)initializing")
      // is tried again for about half a minute; a missing CRD or missing rights fail at once.
      for (let attempt = 1; attempt <= startAttempts; attempt++) {
        failure = undefined;
        await inf.start();
        const status = apiStatus(failure) ?? (failure as { statusCode?: number })?.statusCode;
        if (listed(inf) || status === 401 || status === 403 || status === 404) break;
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
      inf.off("error", onStartError);
      if (!listed(inf)) {
        const status = apiStatus(failure) ?? (failure as { statusCode?: number })?.statusCode;
        const hint = status === 404
          ? ` (are the CRDs installed? kubectl apply -f deploy/chart/tower-hub/crds/)`
          : status === 403
          ? ` (the hub's RBAC must allow list and watch of ${what[i]} in namespace ${ns})`
          : "";
        throw new Error(
          `host cluster ${this.#host.server}: cannot list ${what[i]}: ${apiMessage(failure)}${hint}`,
        );
      }
      inf.on("change", () => {
        this.#backoff.delete(inf);
        this.#changed();
      });
      inf.on("error", (e: unknown) => this.#restart(inf, what[i]!, e));
    })).catch(async (e) => {
      await this.close();
      throw e;
    });
  }

  /** Stops the watches. */
  async close(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#restarts) clearTimeout(t);
    const all = [...this.#crs.values(), this.#secrets, this.#settings];
    await Promise.all(all.map((inf) => inf?.stop()));
  }

  /** Starts a failed watch again after a delay that doubles (to 10 s) until it delivers events again. */
  #restart(inf: Cache<k8s.KubernetesObject>, what: string, e: unknown): void {
    if (this.#stopped) return;
    const delayMs = this.#backoff.get(inf) ?? 1000;
    this.#backoff.set(inf, Math.min(delayMs * 2, 10_000));
    this.#log.warn("registry watch failed; restarting", { resource: what, error: apiMessage(e), delayMs });
    const t = setTimeout(() => {
      this.#restarts.delete(t);
      // A failing list calls the error handler again, which schedules the next try.
      if (!this.#stopped) void inf.start().catch(() => {});
    }, delayMs);
    this.#restarts.add(t);
  }

  /** The stored Cluster object of `name` as last seen (for its status). */
  clusterObject(name: string): StoredObject | undefined {
    return this.#cr("cluster").get(name, this.#host.namespace);
  }

  /** Calls `f` after every change the watches deliver; returns a function that stops that. */
  onEvent(f: () => void): () => void {
    this.#events.add(f);
    return () => this.#events.delete(f);
  }

  #changed(): void {
    for (const f of this.#events) f();
  }

  #cr(kind: Kind): Cache<StoredObject & k8s.KubernetesObject> {
    const c = this.#crs.get(kind);
    if (!c) throw new Error("the registry is not started");
    return c;
  }

  #secret(name: string): k8s.V1Secret | undefined {
    return this.#secrets?.get(name, this.#host.namespace);
  }

  #snapshot(): Snapshot {
    const before = new Map<string, string>();
    const accessNames = new Map<AccessRule, string>();
    const userObjects = new Map<string, string>();
    const clusters: ClusterRecord[] = [];
    for (const o of this.#cr("cluster").list()) {
      const c = clusterFromObject(o, this.#secret(clusterTokenSecret(o.metadata?.name ?? "")) as StoredData);
      if (!this.#valid({ clusters: [{ ...c, tokenHash: c.tokenHash || placeholderHash }] }, o)) continue;
      clusters.push(c);
      before.set(`cluster/${c.name}`, json(c));
    }
    const users: UserRecord[] = [];
    for (const o of this.#cr("user").list()) {
      const u = userFromObject(o, this.#secret(userTokenSecret(o.metadata?.name ?? "")) as StoredData);
      if (!this.#valid({ users: [u] }, o) || userObjects.has(u.name)) continue;
      users.push(u);
      userObjects.set(u.name, o.metadata!.name!);
      before.set(`user/${u.name}`, json(u));
    }
    const access: AccessRule[] = [];
    for (const o of [...this.#cr("access").list()].sort(byName)) {
      const r = accessFromObject(o);
      if (!this.#valid({ access: [r] }, o)) continue;
      access.push(r);
      accessNames.set(r, o.metadata!.name!);
      before.set(`access/${o.metadata!.name}`, json(r));
    }
    const loadBalancers = [];
    for (const o of this.#cr("lbPort").list()) {
      const a = lbPortFromObject(o);
      if (!this.#valid({ loadBalancers: [a] }, o)) continue;
      // The object's name is what keeps two writers off one port: it must be the port it claims.
      if (o.metadata?.name !== lbPortName(a)) {
        this.#log.warn("registry object ignored", {
          object: o.metadata?.name,
          error: `name must be ${lbPortName(a)}`,
        });
        continue;
      }
      loadBalancers.push(a);
      before.set(`lb/${lbPortName(a)}`, json(a));
    }
    const settings = settingsFromConfigMap(
      this.#settings?.get(settingsName, this.#host.namespace) as StoredData,
    );
    before.set("settings", json(settings));
    // Stable order whatever order the watches delivered objects in (access rules: by name, above).
    const byKey = <T>(key: (x: T) => string) => (a: T, b: T) =>
      key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
    clusters.sort(byKey((c) => c.name));
    users.sort(byKey((u) => u.name));
    loadBalancers.sort(byKey(lbPortName));
    return {
      data: { version: 1, settings, clusters, users, access, loadBalancers },
      before,
      accessNames,
      userObjects,
    };
  }

  readonly #invalidSeen = new Set<string>();

  /** Checks one stored record with the file registry's rules; logs (once per version) and skips a bad one. */
  #valid(doc: Partial<RegistryData>, o: StoredObject): boolean {
    const where = `${o.kind ?? "object"} ${this.#host.namespace}/${o.metadata?.name}`;
    try {
      validateRegistry(doc, where);
      return true;
    } catch (e) {
      const key = `${where}@${o.metadata?.resourceVersion}`;
      if (!this.#invalidSeen.has(key)) {
        this.#invalidSeen.add(key);
        this.#log.warn("registry object ignored", { object: where, error: (e as Error).message });
      }
      return false;
    }
  }

  read(): Promise<RegistryData> {
    return Promise.resolve(this.#snapshot().data);
  }

  watch(onChange: (data: RegistryData) => void): () => Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Coalesce a burst of events (an import, a token rotation's two objects) into one call.
    const fire = () => {
      timer ??= setTimeout(() => {
        timer = undefined;
        onChange(this.#snapshot().data);
      }, 20);
    };
    this.#events.add(fire);
    fire();
    // Reads come from the watch cache and never wait: nothing is in flight once stopped.
    return () => {
      this.#events.delete(fire);
      if (timer) clearTimeout(timer);
      return Promise.resolve();
    };
  }

  /** One update at a time in this process: racing ourselves would only cost retries. */
  #queue: Promise<unknown> = Promise.resolve();

  update<T>(change: (data: RegistryData) => T): Promise<T> {
    const run = this.#queue.then(() => this.#update(change));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #update<T>(change: (data: RegistryData) => T): Promise<T> {
    for (let attempt = 1;; attempt++) {
      const snap = this.#snapshot();
      const result = change(snap.data);
      const checked = {
        ...snap.data,
        clusters: snap.data.clusters.map((c) => ({ ...c, tokenHash: c.tokenHash || placeholderHash })),
      };
      validateRegistry(checked, "registry update");
      try {
        const seen = await this.#write(snap);
        await this.#until(seen, settleMs);
        return result;
      } catch (e) {
        if (!(e instanceof StaleWrite) || attempt >= maxAttempts) throw e;
        this.#log.debug("registry write lost a race; retrying", { attempt, error: e.message });
        await this.#until(e.settled, settleMs);
      }
    }
  }

  /** Resolves once `ready()` holds (checked on every cache event) or after `ms`. */
  #until(ready: () => boolean, ms: number): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#events.delete(check);
        resolve();
      };
      const check = () => ready() && done();
      const timer = setTimeout(done, ms);
      this.#events.add(check);
    });
  }

  /** Writes the difference between the snapshot as read and as changed; returns "the cache shows it". */
  async #write(snap: Snapshot): Promise<() => boolean> {
    const { data, before } = snap;
    const seen: (() => boolean)[] = [];
    const ns = this.#host.namespace;
    const crs = (kind: Kind) => this.#cr(kind);
    const rvIs = (kind: Kind, name: string, rv: string | undefined) => () =>
      crs(kind).get(name, ns)?.metadata?.resourceVersion === rv;
    const gone = (kind: Kind, name: string) => () => crs(kind).get(name, ns) === undefined;

    // Clusters.
    const clusterKeys = new Set(data.clusters.map((c) => c.name));
    for (const c of data.clusters) {
      const was = before.get(`cluster/${c.name}`);
      if (was === json(c)) continue;
      const old = was ? JSON.parse(was) as ClusterRecord : undefined;
      let uid = crs("cluster").get(c.name, ns)?.metadata?.uid;
      if (!old) {
        const made = await this.#createCr("cluster", c.name, clusterSpec(c), c.createdAt);
        uid = made.metadata?.uid;
        seen.push(rvIs("cluster", c.name, made.metadata?.resourceVersion));
      } else if (json(clusterSpec(old)) !== json(clusterSpec(c))) {
        const made = await this.#replaceCr("cluster", c.name, clusterSpec(c));
        seen.push(rvIs("cluster", c.name, made.metadata?.resourceVersion));
      }
      if (!old || old.tokenHash !== c.tokenHash || old.tokenRotatedAt !== c.tokenRotatedAt) {
        seen.push(
          await this.#putToken(clusterTokenSecret(c.name), "cluster", c.tokenHash, c.tokenRotatedAt, {
            kind: kinds.cluster.kind,
            name: c.name,
            uid,
          }),
        );
      }
    }
    for (const key of before.keys()) {
      const name = key.startsWith("cluster/") ? key.slice(8) : undefined;
      if (name === undefined || clusterKeys.has(name)) continue;
      await this.#deleteCr("cluster", name);
      await this.#deleteSecret(clusterTokenSecret(name));
      seen.push(gone("cluster", name));
    }

    // Users.
    const userKeys = new Set(data.users.map((u) => u.name));
    for (const u of data.users) {
      const was = before.get(`user/${u.name}`);
      if (was === json(u)) continue;
      const old = was ? JSON.parse(was) as UserRecord : undefined;
      const obj = snap.userObjects.get(u.name) ?? userObjectName(u.name);
      let uid = crs("user").get(obj, ns)?.metadata?.uid;
      if (!old) {
        const made = await this.#createCr("user", obj, userSpec(u), u.createdAt);
        uid = made.metadata?.uid;
        seen.push(rvIs("user", obj, made.metadata?.resourceVersion));
      } else if (json(userSpec(old)) !== json(userSpec(u))) {
        const made = await this.#replaceCr("user", obj, userSpec(u));
        seen.push(rvIs("user", obj, made.metadata?.resourceVersion));
      }
      if (old?.tokenHash !== u.tokenHash) {
        if (u.tokenHash) {
          seen.push(
            await this.#putToken(userTokenSecret(obj), "user", u.tokenHash, undefined, {
              kind: kinds.user.kind,
              name: obj,
              uid,
            }),
          );
        } else await this.#deleteSecret(userTokenSecret(obj));
      }
    }
    for (const key of before.keys()) {
      const name = key.startsWith("user/") ? key.slice(5) : undefined;
      if (name === undefined || userKeys.has(name)) continue;
      const obj = snap.userObjects.get(name) ?? userObjectName(name);
      await this.#deleteCr("user", obj);
      await this.#deleteSecret(userTokenSecret(obj));
      seen.push(gone("user", obj));
    }

    // Access rules: identity of the record objects says which stored rule each one is.
    const kept = new Set<string>();
    let fresh = 0;
    for (const r of data.access) {
      const name = snap.accessNames.get(r);
      if (name === undefined) {
        const made = await this.#createCr("access", newAccessName(fresh++), accessSpec(r));
        seen.push(rvIs("access", made.metadata!.name!, made.metadata?.resourceVersion));
        continue;
      }
      kept.add(name);
      if (before.get(`access/${name}`) !== json(r)) {
        const made = await this.#replaceCr("access", name, accessSpec(r));
        seen.push(rvIs("access", name, made.metadata?.resourceVersion));
      }
    }
    for (const name of snap.accessNames.values()) {
      if (kept.has(name)) continue;
      await this.#deleteCr("access", name);
      seen.push(gone("access", name));
    }

    // LoadBalancer ports: releases first, so a port freed and taken again in one change is free.
    const lbWanted = new Map(data.loadBalancers.map((a) => [lbPortName(a), a]));
    for (const key of before.keys()) {
      if (!key.startsWith("lb/")) continue;
      const name = key.slice(3);
      const now = lbWanted.get(name);
      if (now && json(now) === before.get(key)) continue;
      await this.#deleteCr("lbPort", name);
      seen.push(gone("lbPort", name));
    }
    for (const [name, a] of lbWanted) {
      if (before.get(`lb/${name}`) === json(a)) continue;
      const made = await this.#createCr("lbPort", name, lbPortSpec(a));
      seen.push(rvIs("lbPort", name, made.metadata?.resourceVersion));
    }

    // Settings.
    if (before.get("settings") !== json(data.settings)) seen.push(await this.#putSettings(data));
    return () => seen.every((f) => f());
  }

  async #api<T>(what: string, settled: () => boolean, call: () => Promise<T>): Promise<T> {
    try {
      const out = await call();
      this.writes++;
      return out;
    } catch (e) {
      const status = apiStatus(e);
      if (status === 409 || status === 404) throw new StaleWrite(`${what}: ${apiMessage(e)}`, settled);
      throw new Error(`host cluster: ${what}: ${apiMessage(e)}`);
    }
  }

  #createCr(
    kind: Kind,
    name: string,
    spec: Record<string, unknown>,
    createdAt?: string,
  ): Promise<StoredObject> {
    const ns = this.#host.namespace;
    const { plural, kind: k } = kinds[kind];
    return this.#api(
      `create ${plural}/${name}`,
      () => this.#cr(kind).get(name, ns) !== undefined,
      () =>
        this.#custom.createNamespacedCustomObject({
          group,
          version,
          namespace: ns,
          plural,
          body: {
            apiVersion,
            kind: k,
            metadata: {
              name,
              namespace: ns,
              labels: managedLabels,
              ...(createdAt ? { annotations: { [createdAtAnnotation]: createdAt } } : {}),
            },
            spec,
          },
        }) as Promise<StoredObject>,
    );
  }

  #replaceCr(kind: Kind, name: string, spec: Record<string, unknown>): Promise<StoredObject> {
    const ns = this.#host.namespace;
    const { plural } = kinds[kind];
    const current = this.#cr(kind).get(name, ns);
    const rv = current?.metadata?.resourceVersion;
    return this.#api(
      `update ${plural}/${name}`,
      () => this.#cr(kind).get(name, ns)?.metadata?.resourceVersion !== rv,
      () =>
        this.#custom.replaceNamespacedCustomObject({
          group,
          version,
          namespace: ns,
          plural,
          name,
          body: { ...current, spec },
        }) as Promise<StoredObject>,
    );
  }

  async #deleteCr(kind: Kind, name: string): Promise<void> {
    const ns = this.#host.namespace;
    const { plural } = kinds[kind];
    const rv = this.#cr(kind).get(name, ns)?.metadata?.resourceVersion;
    await this.#api(
      `delete ${plural}/${name}`,
      () => this.#cr(kind).get(name, ns)?.metadata?.resourceVersion !== rv,
      () =>
        this.#custom.deleteNamespacedCustomObject({
          group,
          version,
          namespace: ns,
          plural,
          name,
          body: { preconditions: { resourceVersion: rv } },
        }),
    );
  }

  async #deleteSecret(name: string): Promise<void> {
    const ns = this.#host.namespace;
    const rv = this.#secret(name)?.metadata?.resourceVersion;
    if (rv === undefined) return;
    await this.#api(
      `delete secrets/${name}`,
      () => this.#secret(name)?.metadata?.resourceVersion !== rv,
      () =>
        this.#core.deleteNamespacedSecret({
          name,
          namespace: ns,
          body: { preconditions: { resourceVersion: rv } },
        }),
    );
  }

  /** Creates or replaces (at the version read) the Secret holding a token hash. */
  async #putToken(
    name: string,
    forKind: "cluster" | "user",
    hash: string,
    rotatedAt: string | undefined,
    owner: { kind: string; name: string; uid: string | undefined },
  ): Promise<() => boolean> {
    const ns = this.#host.namespace;
    const current = this.#secret(name);
    const rv = current?.metadata?.resourceVersion;
    const body: k8s.V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name,
        namespace: ns,
        labels: { ...managedLabels, [tokenLabel]: forKind },
        ...(rotatedAt ? { annotations: { [rotatedAtAnnotation]: rotatedAt } } : {}),
        // Deleting the Cluster or User with kubectl takes its token with it.
        ...(owner.uid
          ? { ownerReferences: [{ apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid }] }
          : {}),
        ...(rv ? { resourceVersion: rv } : {}),
      },
      type: "Opaque",
      data: { tokenHash: btoa(hash) },
    };
    const made = rv
      ? await this.#api(
        `update secrets/${name}`,
        () => this.#secret(name)?.metadata?.resourceVersion !== rv,
        () => this.#core.replaceNamespacedSecret({ name, namespace: ns, body }),
      )
      : await this.#api(
        `create secrets/${name}`,
        () => this.#secret(name) !== undefined,
        () => this.#core.createNamespacedSecret({ namespace: ns, body }),
      );
    const newRv = made.metadata?.resourceVersion;
    return () => this.#secret(name)?.metadata?.resourceVersion === newRv;
  }

  async #putSettings(data: RegistryData): Promise<() => boolean> {
    const ns = this.#host.namespace;
    const current = this.#settings?.get(settingsName, ns);
    const rv = current?.metadata?.resourceVersion;
    const body: k8s.V1ConfigMap = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: settingsName,
        namespace: ns,
        labels: { ...managedLabels, [settingsLabel]: "hub" },
        ...(rv ? { resourceVersion: rv } : {}),
      },
      data: settingsData(data.settings),
    };
    const settled = () => this.#settings?.get(settingsName, ns)?.metadata?.resourceVersion !== rv;
    const made = rv
      ? await this.#api(
        `update configmaps/${settingsName}`,
        settled,
        () => this.#core.replaceNamespacedConfigMap({ name: settingsName, namespace: ns, body }),
      )
      : await this.#api(
        `create configmaps/${settingsName}`,
        settled,
        () => this.#core.createNamespacedConfigMap({ namespace: ns, body }),
      );
    const newRv = made.metadata?.resourceVersion;
    return () => this.#settings?.get(settingsName, ns)?.metadata?.resourceVersion === newRv;
  }
}

/** Stands in for a missing token hash when a record is checked with the file registry's rules. */
const placeholderHash = "sha256:" + "0".repeat(64);
