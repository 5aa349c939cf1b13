/**
 * The agent's `kubernetes` endpoint: it terminates HTTP/1.1 on each channel from the hub and proxies to
 * the cluster's kube-apiserver over TLS (cluster CA), adding its own ServiceAccount token in impersonate
 * mode. Cluster credentials never leave the cluster. The token file is re-read in the background so
 * rotation works and no request waits on the disk.
 * @module
 */

import http from "node:http";
import net from "node:net";
import https from "node:https";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import type { Logger } from "../log/log.ts";
import type { Endpoint } from "../tunnel/mod.ts";
import { endToEndHeaders, isUpgrade, proxyRequest, proxyUpgrade, type Upstream } from "../proxy/mod.ts";
import { kubeStatusText, refuseWithStatus } from "../kube/status.ts";
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
}

/** Header the hub sets to the mode of a request. */
const modeHeader = "x-tower-auth-mode";

/** Builds the endpoint. */
export function kubeEndpoint(cfg: KubeEndpointConfig): Endpoint & { close(): void } {
  const token = new TokenFile(cfg.tokenFile, cfg.tokenRefreshMs ?? 5000, cfg.log);

  // Kept-alive TLS connections to the API server, shared by every channel.
  const pool = new https.Agent({ keepAlive: true, maxSockets: 512, ca: cfg.caPem });
  const host = cfg.apiserver.hostname.replace(/^\[|\]$/g, "");
  const port = Number(cfg.apiserver.port || 443);
  const upstream: Upstream = {
    request: (o) => {
      const r = https.request({
        host,
        port,
        ...o,
        agent: pool,
        ca: cfg.caPem,
        // SNI carries names only (RFC 6066): never an IPv4 or IPv6 literal.
        servername: net.isIP(host) ? undefined : host,
      });
      r.on("socket", (s) => (s as import("node:net").Socket).setNoDelay?.(true));
      return Promise.resolve(r);
    },
  };

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
      const body = kubeStatusText(t.refuse[0], t.refuse[1]);
      res.writeHead(t.refuse[0], {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
      req.resume();
      return;
    }
    void proxyRequest(req, res, { path: req.url ?? "/", headers: t.headers }, upstream, (e) => {
      cfg.log.warn("apiserver request failed", { error: e });
      const body = kubeStatusText(502, `agent could not reach the API server: ${e.message}`);
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        res.end(body);
      }
    });
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Uint8Array) => {
    const t = rewrite(req);
    if ("refuse" in t || !isUpgrade(req)) {
      const [code, message] = "refuse" in t ? t.refuse : [400, "not an upgrade"];
      refuseWithStatus(socket, code, message);
      return;
    }
    void proxyUpgrade(req, socket, head, { path: req.url ?? "/", headers: t.headers }, upstream, (e) => {
      cfg.log.warn("apiserver upgrade failed", { error: e });
      refuseWithStatus(socket, 502, `agent: ${e.message}`);
    });
  });
  // Watches, logs -f and exec streams live as long as the user wants.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 0;
  server.timeout = 0;

  return {
    // The first channel waits for the first read of the token; later ones never touch the disk.
    open: async () => {
      await token.ready();
      return (channel: Duplex) => void server.emit("connection", channel);
    },
    close: () => {
      pool.destroy();
      server.close();
    },
  };
}
