/**
 * Where a request to the hub's Kubernetes route goes: `/clusters/NAME/REST…` (or any path on a cluster's
 * dedicated port) to that cluster's API server, `…/services/NS/SVC:PORT/REST…` to a Service port inside
 * it. Pure: parses and checks the request target, nothing else.
 * @module
 */

import { isClusterName } from "../config/mod.ts";

/** A request refused before proxying, with its HTTP status and a message kubectl prints. */
export class Refusal extends Error {
  /** `who` is the authenticated caller when known, so the audit line names whom the hub refused. */
  constructor(readonly code: number, message: string, readonly who?: { user: string; groups: string[] }) {
    super(message);
  }
}

/** A Service port inside a cluster. */
export interface ServiceRef {
  namespace: string;
  name: string;
  /** Port number or name. */
  port: string;
}

/** Where a request goes: its cluster, and the path (with query) on that cluster's API server or Service. */
export interface KubeRoute {
  cluster: string;
  path: string;
  /** Set for `/clusters/NAME/services/NS/SVC:PORT/…`: a Service port inside the cluster. */
  service?: ServiceRef;
}

const servicePath =
  /^\/services\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9-]{1,15})(\/.*)?$/;

/**
 * The route of a request target. `fixedCluster` is set on a cluster's dedicated port, where every path
 * is that cluster's; otherwise only `/clusters/NAME/…` is this route's (undefined for other paths).
 * Throws a {@link Refusal} (400) for names that are not DNS labels, percent-encoding in the name, dot
 * segments, encoded slashes and malformed Service paths.
 */
export function kubeRoute(url: string, fixedCluster?: string): KubeRoute | undefined {
  const q = url.indexOf("?");
  const rawPath = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? "" : url.slice(q);
  let cluster: string;
  let path: string;
  if (fixedCluster !== undefined) {
    cluster = fixedCluster;
    path = rawPath || "/";
  } else {
    if (!rawPath.startsWith("/clusters/")) return undefined;
    const rest = rawPath.slice("/clusters/".length);
    const slash = rest.indexOf("/");
    cluster = slash < 0 ? rest : rest.slice(0, slash);
    if (!isClusterName(cluster)) throw new Refusal(400, `'${cluster}' is not a valid cluster name`);
    path = slash < 0 ? "/" : rest.slice(slash);
  }
  checkPath(path);
  if (path !== "/services" && !path.startsWith("/services/")) return { cluster, path: path + query };
  const m = servicePath.exec(path);
  if (!m) throw new Refusal(400, "service paths look like /clusters/NAME/services/NAMESPACE/SERVICE:PORT/…");
  return {
    cluster,
    path: (m[6] ?? "/") + query,
    service: { namespace: m[1]!, name: m[3]!, port: m[5]! },
  };
}

/** Refuses dot segments (plain or percent-encoded) and encoded slashes, so no path can step sideways. */
function checkPath(path: string): void {
  for (const seg of path.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      throw new Refusal(400, "malformed percent-encoding in path");
    }
    if (decoded === "." || decoded === ".." || decoded.includes("/") || decoded.includes("\\")) {
      throw new Refusal(400, "path must not contain dot segments or encoded slashes");
    }
  }
}

/** The path as the audit line names it: Service requests keep their `/services/NS/SVC:PORT` prefix. */
export function auditPath(route: KubeRoute): string {
  const rest = route.path.split("?")[0]!;
  const svc = route.service;
  return svc ? `/services/${svc.namespace}/${svc.name}:${svc.port}${rest === "/" ? "" : rest}` : rest;
}
