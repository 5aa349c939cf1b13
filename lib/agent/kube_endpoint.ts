/**
 * The agent's `kubernetes` endpoint: it terminates HTTP/1.1 on each channel from the hub and proxies to
 * the cluster's kube-apiserver over TLS (cluster CA), adding its own ServiceAccount token in impersonate
 * mode. Cluster credentials never leave the cluster. The token file is re-read in the background so
 * rotation works and no request waits on the disk.
 * @module
 */

import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { longRunningKind } from "../kube/long_running.ts";
import type { Endpoint } from "../tunnel/mod.ts";
import { DuplexClients, duplexConnections, endToEndHeaders, isUpgrade, ReverseProxy } from "../proxy/mod.ts";
import { refuseWithStatus, sendStatus, statusResponder } from "../kube/status.ts";
import { dialTls } from "./endpoints.ts";
import { TokenFile } from "./token_file.ts";

/** How the hub passes identity; the agent decides which it accepts. */
export type AuthMode = "impersonate" | "passthrough";

/** Where the API server is and how to talk to it. */
export interface KubeEndpointConfig {
  apiserver: URL;
  /** Cluster CA bundle (PEM). */
  caPem: string;
  /** ServiceAccount token file, re-read at most every `tokenRefreshMs`. */
  tokenFile: string;
  tokenRefreshMs?: number;
  modes: AuthMode[];
  log: Logger;
  /** Hears how long each ordinary (not long-running) request to the API server took, and its status. */
  onResponse?: (seconds: number, status: number) => void;
}

/** Header the hub sets to the mode of a request. */
const modeHeader = "x-tower-auth-mode";

/** Builds the endpoint. */
export function kubeEndpoint(cfg: KubeEndpointConfig): Endpoint & { close(): void } {
  const token = new TokenFile(cfg.tokenFile, cfg.tokenRefreshMs ?? 5000, cfg.log);

  // Kept-alive TLS connections to the API server, shared by every channel, spoken to by undici. A
  // connection is handed over only once its TLS handshake is done: Deno's node:https client writes a
  // request during the handshake, and when its body follows in a later write (a body sent apart from
  // its head), end() issues a zero-length write that Deno's TLS socket never completes; the request
  // never finishes and its kept-alive socket then hangs the next request (~120 s, "socket hang up").
  const host = cfg.apiserver.hostname.replace(/^\[|\]$/g, "");
  const port = Number(cfg.apiserver.port || 443);
  // SNI carries names only (RFC 6066): never an IPv4 or IPv6 literal.
  const servername = net.isIP(host) ? undefined : host;
  const apiserver = new DuplexClients<null>({
    dial: async () => ({ duplex: await dialTls(host, port, { ca: cfg.caPem, servername }), carrier: null }),
    maxIdle: 64,
  });
  const proxy = new ReverseProxy(statusResponder("agent could not reach the API server: "));

  /** The target headers for one request, or a refusal. */
  const rewrite = (
    req: http.IncomingMessage,
  ): { headers: http.OutgoingHttpHeaders } | { refuse: [number, string] } => {
    const mode = req.headers[modeHeader];
    if (mode !== "impersonate" && mode !== "passthrough") {
      return { refuse: [400, "request names no auth mode"] };
    }
    if (!cfg.modes.includes(mode)) {
      return { refuse: [403, `this cluster's agent does not accept auth mode '${mode}'`] };
    }
    // Hop-by-hop headers stay on their hop: a `Connection: close` from the hub would cost a new TLS
    // connection to the API server per request.
    const headers = endToEndHeaders(req.rawHeaders);
    delete headers[modeHeader];
    headers.host = cfg.apiserver.host;
    if (mode === "impersonate") {
      // Without an identity to impersonate the request would run with the agent's own rights.
      if (!headers["impersonate-user"]) {
        return { refuse: [400, "impersonate mode request without Impersonate-User"] };
      }
      headers.authorization = `Bearer ${token.current()}`;
    }
    return { headers };
  };

  const server = http.createServer((req, res) => {
    const t = rewrite(req);
    if ("refuse" in t) {
      req.resume();
      sendStatus(res, t.refuse[0], t.refuse[1]);
      return;
    }
    const started = performance.now();
    void proxy.request(req, res, { upstream: apiserver, path: req.url ?? "/", headers: t.headers }).then(
      (o) => {
        if (o.error && !o.status) cfg.log.warn("apiserver request failed", { error: o.error });
        if (cfg.onResponse && !longRunningKind(req.method ?? "GET", req.url ?? "/")) {
          cfg.onResponse((performance.now() - started) / 1000, o.status);
        }
      },
    );
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Uint8Array) => {
    const t = rewrite(req);
    if ("refuse" in t || !isUpgrade(req)) {
      const [code, message] = "refuse" in t ? t.refuse : [400, "not an upgrade"];
      refuseWithStatus(socket, code, message);
      return;
    }
    void proxy.upgrade(req, socket, head, { upstream: apiserver, path: req.url ?? "/", headers: t.headers })
      .then((o) => {
        if (o.error && !o.upgraded) {
          cfg.log.warn("apiserver upgrade failed", { error: o.error, status: o.status });
        }
      });
  });
  // Watches, logs -f and exec streams live as long as the user wants.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 0;
  server.timeout = 0;
  const connections = duplexConnections(server);

  return {
    // The first channel waits for the first read of the token; later ones never touch the disk.
    open: async () => {
      await token.ready();
      return connections.serve;
    },
    close: () => {
      apiserver.close();
      connections.close();
    },
  };
}
