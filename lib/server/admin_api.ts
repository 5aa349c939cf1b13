/**
 * The admin API, `/api/tower/v1/…`: clusters with the agents every replica holds, users, access rules,
 * LoadBalancer ports. Read-only JSON for users in the admin group (`serve --admin-group`); on the front
 * door a caller authenticates like any hub user, and on the data dir's admin socket the file's
 * permissions are the credential (that is how `cluster list` asks).
 * @module
 */

import type http from "node:http";
import type { RegistryData } from "../registry/mod.ts";
import { answer } from "./front_door.ts";
import type { Identity, UserAuthenticator } from "./user_auth.ts";
import type {
  AgentView,
  LbPortView,
  ReplicaRequests,
  ReplicaSnapshot,
  ReplicaSnapshots,
  SnapshotSource,
} from "./replica_snapshot.ts";

/** Where the admin API lives. */
export const adminApiPrefix = "/api/tower/v1/";

/** What the admin API reads. */
export interface AdminApiDeps {
  registry(): RegistryData;
  /** Decides whether a front-door caller is an admin ({@link checkAdmin}, plus whatever counts refusals). */
  check(req: http.IncomingMessage): Promise<AdminCheck>;
  /** Every replica's live state. */
  snapshots: SnapshotSource;
  /** This replica's own live state (what peers ask each other for). */
  local(): Promise<ReplicaSnapshot>;
}

/** `GET /api/tower/v1/clusters`. */
export interface ClustersResponse {
  /** The replicas whose agents are listed, with when each was asked. */
  replicas: { name: string; version: string; takenAt: string; requests: ReplicaRequests }[];
  /** Live replicas (by lease) that did not answer: their agents are missing here. */
  unreachable: string[];
  clusters: {
    name: string;
    labels: Record<string, string>;
    mode: string;
    port: number | null;
    createdAt: string;
    tokenRotatedAt: string | null;
    agents: AgentView[];
    /** Long-running requests open now, by kind, summed over replicas. */
    streams: Record<string, number>;
  }[];
}

/** `GET /api/tower/v1/users`: never a token hash. */
export interface UsersResponse {
  users: {
    name: string;
    groups: string[];
    credential: "token" | "certificate";
    extra: Record<string, string[]>;
    createdAt: string;
  }[];
}

/** `GET /api/tower/v1/access`. */
export interface AccessResponse {
  rules: { users: string[]; groups: string[]; clusters: string[]; clusterSelector: string | null }[];
}

/** `GET /api/tower/v1/lb-ports`. */
export interface LbPortsResponse {
  ports: LbPortView[];
}

/** The outcome of checking a caller: an admin, or the status to refuse with. */
export type AdminCheck = { ok: true; who: Identity } | { ok: false; code: 401 | 403; message: string };

/**
 * Whether the request comes from an admin on the front door: a hub user (certificate or token) in
 * `adminGroup`. Without an admin group nobody is, on the front door.
 */
export async function checkAdmin(
  req: http.IncomingMessage,
  users: UserAuthenticator,
  registry: RegistryData,
  adminGroup: string | undefined,
): Promise<AdminCheck> {
  const auth = await users.authenticate(req, registry);
  if (!auth.ok) {
    return {
      ok: false,
      code: 401,
      message: `Unauthorized: ${auth.reason}; present a hub client certificate or a bearer token`,
    };
  }
  const who = auth.identity;
  if (adminGroup === undefined || !who.groups.includes(adminGroup)) {
    return {
      ok: false,
      code: 403,
      message: `user '${who.user}' is not in the hub's admin group` +
        (adminGroup === undefined ? " (the hub runs without --admin-group)" : ""),
    };
  }
  return { ok: true, who };
}

/** Builds the JSON answers of the admin API. */
export function adminApi(deps: AdminApiDeps): {
  /** Front-door route: `/api/tower/v1/…` for admins; false for other paths. */
  route(req: http.IncomingMessage, res: http.ServerResponse): boolean;
  /** Answers a request whose caller is already known to be an admin (the admin socket). */
  serve(req: http.IncomingMessage, res: http.ServerResponse): void;
  /** The clusters answer (also what the status page renders), from `snaps` when given. */
  clusters(snaps?: ReplicaSnapshots): Promise<ClustersResponse>;
  /** The LoadBalancer ports answer, from `snaps` when given. */
  lbPorts(snaps?: ReplicaSnapshots): Promise<LbPortsResponse>;
} {
  const clusters = async (given?: ReplicaSnapshots): Promise<ClustersResponse> => {
    const { snapshots: snaps, unreachable } = given ?? await deps.snapshots();
    const registry = deps.registry();
    return {
      replicas: snaps.map((s) => ({
        name: s.replica,
        version: s.version,
        takenAt: s.takenAt,
        requests: s.requests,
      })),
      unreachable,
      clusters: registry.clusters.map((c) => {
        const streams: Record<string, number> = {};
        for (const s of snaps) {
          for (const [kind, n] of Object.entries(s.streams[c.name] ?? {})) {
            streams[kind] = (streams[kind] ?? 0) + n;
          }
        }
        return {
          name: c.name,
          labels: c.labels ?? {},
          mode: c.mode ?? "impersonate",
          port: c.port ?? null,
          createdAt: c.createdAt,
          tokenRotatedAt: c.tokenRotatedAt ?? null,
          agents: snaps.flatMap((s) => s.agents[c.name] ?? []),
          streams,
        };
      }),
    };
  };

  const users = (): UsersResponse => ({
    users: deps.registry().users.map((u) => ({
      name: u.name,
      groups: [...u.groups],
      credential: u.tokenHash ? "token" : "certificate",
      extra: u.extra ?? {},
      createdAt: u.createdAt,
    })),
  });

  const access = (): AccessResponse => ({
    rules: deps.registry().access.map((r) => ({
      users: r.users ?? [],
      groups: r.groups ?? [],
      clusters: [...(r.clusters ?? [])],
      clusterSelector: r.clusterSelector ?? null,
    })),
  });

  const lbPorts = async (given?: ReplicaSnapshots): Promise<LbPortsResponse> => ({
    ports: (given ?? await deps.snapshots()).snapshots.flatMap((s) => s.lbPorts),
  });

  const resources: Record<string, () => object | Promise<object>> = {
    clusters: () => clusters(),
    users,
    access,
    "lb-ports": () => lbPorts(),
    snapshot: () => deps.local(),
  };

  const serve = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const name = path.slice(adminApiPrefix.length);
    const resource = Object.hasOwn(resources, name) ? resources[name] : undefined;
    if (!resource) {
      return answer(res, 404, { error: `no such resource; try ${Object.keys(resources).join(", ")}` });
    }
    if (req.method !== "GET") return answer(res, 405, { error: "the admin API is read-only: GET" });
    Promise.resolve(resource()).then(
      (body) => answer(res, 200, body),
      (e: Error) => answer(res, 500, { error: e.message }),
    );
  };

  return {
    route: (req, res) => {
      if (!(req.url ?? "/").startsWith(adminApiPrefix)) return false;
      req.resume();
      deps.check(req).then((check) => {
        if (check.ok) serve(req, res);
        else answer(res, check.code, { error: check.message });
      }, (e: Error) => answer(res, 500, { error: e.message }));
      return true;
    },
    serve,
    clusters,
    lbPorts,
  };
}
