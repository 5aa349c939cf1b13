/**
 * The headers a request carries past the hub. Every client-sent `Impersonate-*` and `X-Tower-*` header is
 * dropped and the client's address is appended to `X-Forwarded-For`; the API route then gets the hub's
 * word on who is calling, and a Service gets no hub credential and no identity at all. Pure.
 * @module
 */

import type http from "node:http";
import type { AuthMode } from "../registry/mod.ts";
import { endToEndHeaders } from "../proxy/mod.ts";
import type { Identity } from "./user_auth.ts";
import type { ServiceRef } from "./kube_route.ts";

/** Header telling the agent which identity mode a request uses. */
export const authModeHeader = "x-tower-auth-mode";

/**
 * Appends the client's address to `X-Forwarded-For`, as the Kubernetes API server's own proxy does, so
 * that the API server's audit (`sourceIPs`) and a Service's logs name the client and not the agent.
 * Entries the client sent stay in front of it: only the last one is the hub's word.
 */
export function forwardedFor(headers: http.OutgoingHttpHeaders, remote: string | undefined): void {
  if (!remote) return;
  const client = remote.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  const sent = headers["x-forwarded-for"];
  const before = Array.isArray(sent) ? sent.join(", ") : sent === undefined ? "" : String(sent);
  headers["x-forwarded-for"] = before.trim() ? `${before}, ${client}` : client;
}

/** End-to-end headers without any the client may not set itself, and the client's address appended. */
function clientHeaders(rawHeaders: readonly string[], remote: string | undefined): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = endToEndHeaders(rawHeaders);
  for (const name of Object.keys(headers)) {
    if (name.startsWith("impersonate-") || name.startsWith("x-tower-")) delete headers[name];
  }
  forwardedFor(headers, remote);
  return headers;
}

/**
 * The headers sent to a cluster's agent: in impersonate mode the client's `Authorization` is replaced by
 * `Impersonate-User`/`-Group`/`-Extra-*` for `who`; in passthrough mode the client's own credential goes on.
 */
export function identityHeaders(
  rawHeaders: readonly string[],
  mode: AuthMode,
  who: Identity,
  remote?: string,
): http.OutgoingHttpHeaders {
  const headers = clientHeaders(rawHeaders, remote);
  headers[authModeHeader] = mode;
  if (mode === "impersonate") {
    delete headers.authorization;
    headers["impersonate-user"] = who.user;
    if (who.groups.length) headers["impersonate-group"] = who.groups;
    for (const [key, values] of Object.entries(who.extra ?? {})) {
      // Characters not legal in a header name ('/') are percent-encoded; the API server decodes them.
      if (values.length) headers[`impersonate-extra-${encodeURIComponent(key)}`] = values;
    }
  }
  return headers;
}

/** The headers sent to a Service: no hub credential, no identity, and a Host naming the Service. */
export function serviceHeaders(
  rawHeaders: readonly string[],
  svc: ServiceRef,
  remote?: string,
): http.OutgoingHttpHeaders {
  const headers = clientHeaders(rawHeaders, remote);
  delete headers.authorization;
  // A named port (`hello:http`) cannot go into Host: a name there makes the header invalid, and
  // backends reject the request. The hub does not know the number, so Host then carries no port.
  headers.host = `${svc.name}.${svc.namespace}.svc${/^\d+$/.test(svc.port) ? `:${svc.port}` : ""}`;
  return headers;
}
