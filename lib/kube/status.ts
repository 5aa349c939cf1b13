/**
 * `metav1.Status` error bodies: what kubectl and client libraries decode and print for a failed request.
 * @module
 */

import http from "node:http";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { type Responder, writeRawResponse } from "../proxy/mod.ts";

/** HTTP status → Kubernetes `reason`. */
const reasons: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  409: "Conflict",
  429: "TooManyRequests",
  500: "InternalError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** A `metav1.Status` failure object. */
export function kubeStatus(code: number, message: string): Record<string, unknown> {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason: reasons[code] ?? "Unknown",
    code,
  };
}

/** The JSON text of {@link kubeStatus}. */
export function kubeStatusText(code: number, message: string): string {
  return JSON.stringify(kubeStatus(code, message));
}

/** Answers an upgrade request on its raw socket with a `metav1.Status` body, and closes it. */
export function refuseWithStatus(socket: Duplex, code: number, message: string): void {
  writeRawResponse(
    socket,
    code,
    http.STATUS_CODES[code] ?? "",
    kubeStatusText(code, message),
    "application/json",
  );
}

/**
 * Answers a plain request with a `metav1.Status` body (or cuts the response short if it began). With
 * `warn`, the message also goes in a `Warning` header: client-go reads discovery answers raw and shows only
 * its own generic text for an error status ("the server could not find the requested resource"), but
 * kubectl prints every warning.
 */
export function sendStatus(res: http.ServerResponse, code: number, message: string, warn = false): void {
  if (res.headersSent) return void res.destroy();
  const body = kubeStatusText(code, message);
  res.writeHead(code, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...(warn ? { warning: warningValue(message) } : {}),
  });
  res.end(body);
}

/** The proxy's error answers as `metav1.Status`, each message after `prefix`. */
export function statusResponder(prefix: string): Responder {
  return {
    error: (res, code, message) => {
      sendStatus(res, code, prefix + message);
      return code;
    },
    socketError: (socket, code, message) => {
      refuseWithStatus(socket, code, prefix + message);
      return code;
    },
  };
}

/** The Kubernetes verb of a request, as the apiserver's audit log names it. */
export function kubeVerb(method: string, path: string, query: URLSearchParams): string {
  const m = method.toUpperCase();
  if (query.get("watch") === "true" || query.get("watch") === "1") return "watch";
  if (m === "GET" || m === "HEAD") {
    // /api/v1/namespaces/NS/pods → list; …/pods/NAME and …/pods/NAME/log → get
    const parts = path.split("/").filter(Boolean);
    const start = parts[0] === "api" ? 2 : parts[0] === "apis" ? 3 : -1;
    if (start < 0) return "get";
    let rest = parts.slice(start);
    if (rest[0] === "namespaces" && rest.length > 2) rest = rest.slice(2);
    return rest.length === 1 ? "list" : "get";
  }
  return { POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" }[m] ?? m.toLowerCase();
}

/** A `Warning` header value (RFC 7234 §5.5, code 299) carrying `text`, limited to printable ASCII. */
export function warningValue(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, "\\$&");
  return `299 - "${printable}"`;
}

/**
 * Whether a path (query allowed) is one kubectl reads during discovery: `/version`, `/api`, `/apis`, a
 * group or group version, `/openapi/…`. client-go reads these raw and prints its own text for an error.
 */
export function isDiscoveryPath(path: string): boolean {
  const parts = path.split("?")[0]!.split("/").filter(Boolean);
  if (parts[0] === "api") return parts.length <= 2;
  if (parts[0] === "apis") return parts.length <= 3;
  return parts.length === 0 || parts[0] === "version" || parts[0] === "openapi";
}
