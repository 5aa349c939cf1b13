/**
 * Which requests are long-running — watches, `logs`, exec/attach/port-forward, proxy — the same split the
 * API server makes for its own request timeout and shutdown. A draining hub waits for the others and
 * closes these at the end.
 * @module
 */

import { kubeVerb } from "./status.ts";

/** Subresources the API server treats as long-running. */
const longRunningSubresources = new Set<string>(["attach", "exec", "log", "portforward", "proxy"]);

/** The kinds of long-running request (`upgrade`: an upgraded stream of no other kind). */
export type LongRunningKind =
  | "watch"
  | "log"
  | "exec"
  | "attach"
  | "portforward"
  | "proxy"
  | "service"
  | "upgrade";

/** True for a long-running request to a cluster, given its method and URL as the hub received it. */
export function isLongRunning(method: string, url: string): boolean {
  return longRunningKind(method, url) !== undefined;
}

/**
 * The kind of long-running request a request to a cluster is, or undefined for an ordinary one; an
 * upgraded stream is always long-running. `url` as the hub received it, or cluster-relative.
 */
export function longRunningKind(method: string, url: string, upgraded = false): LongRunningKind | undefined {
  const q = url.indexOf("?");
  let path = q < 0 ? url : url.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
  const prefixed = /^\/clusters\/[^/]+(\/.*)?$/.exec(path);
  if (prefixed) path = prefixed[1] ?? "/";
  // The hub's own Service paths are proxying.
  if (path === "/services" || path.startsWith("/services/")) return "service";
  if (kubeVerb(method, path, query) === "watch") return "watch";
  const other = upgraded ? "upgrade" : undefined;
  const parts = path.split("/").filter(Boolean);
  const start = parts[0] === "api" ? 2 : parts[0] === "apis" ? 3 : -1;
  if (start < 0) return other;
  let rest = parts.slice(start);
  if (rest[0] === "watch") return "watch";
  if (rest[0] === "namespaces" && rest.length > 3) rest = rest.slice(2);
  const sub = rest.length >= 3 ? rest[2]! : "";
  return longRunningSubresources.has(sub) ? sub as LongRunningKind : other;
}
