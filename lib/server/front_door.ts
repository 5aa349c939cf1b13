/**
 * The hub's listener: `node:https` (or plain `node:http` when asked), HTTP/1.1 only. It answers health
 * checks and passes every other request and upgrade to the routes the caller mounts, in order (the hub
 * mounts the Kubernetes route and the `/tunnel` route for agents). `node:https` because it is the only Deno server API that hands
 * over the raw socket of a non-WebSocket upgrade (SPDY).
 * @module
 */

import http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";
import type { Logger } from "../log/log.ts";

/** A handler for plain requests; returns false when the request is not its own. */
export type RequestRoute = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
/** A handler for upgrade requests; returns false when the request is not its own. */
export type UpgradeRoute = (req: http.IncomingMessage, socket: Duplex, head: Uint8Array) => boolean;

/** Settings of the front door. */
export interface FrontDoorOptions {
  host: string;
  port: number;
  /** Serving certificate and key (PEM); plain HTTP when absent. */
  tls?: { cert: string; key: string; clientCa?: string };
  /** Whether the hub is ready to serve (`/readyz`). */
  ready: () => boolean;
  log: Logger;
}

/** The running listener. */
export interface FrontDoor {
  server: http.Server;
  /** The port actually bound (useful with port 0). */
  port: number;
  /** Adds a plain-request route, tried in the order added. */
  route(handler: RequestRoute): void;
  /** Adds an upgrade route, tried in the order added. */
  upgrade(handler: UpgradeRoute): void;
  close(): Promise<void>;
}

/** Writes a small plain-text or JSON answer. */
export function answer(res: http.ServerResponse, status: number, body: string | object): void {
  const json = typeof body !== "string";
  const text = json ? JSON.stringify(body) : body + "\n";
  res.writeHead(status, {
    "content-type": json ? "application/json" : "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(text);
}

/** Refuses an upgrade on a raw socket with a plain HTTP response. */
export function refuseUpgrade(socket: Duplex, status: number, message: string): void {
  const body = message + "\n";
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** Starts listening. */
export function startFrontDoor(opts: FrontDoorOptions): Promise<FrontDoor> {
  const routes: RequestRoute[] = [];
  const upgrades: UpgradeRoute[] = [];
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") return answer(res, 200, "ok");
    if (path === "/readyz") return opts.ready() ? answer(res, 200, "ok") : answer(res, 503, "not ready");
    for (const r of routes) if (r(req, res)) return;
    answer(res, 404, "not found");
  };
  const server = opts.tls
    ? https.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      ALPNProtocols: ["http/1.1"],
      ...(opts.tls.clientCa ? { ca: opts.tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
    }, onRequest)
    : http.createServer(onRequest);
  server.on("connection", (s: import("node:net").Socket) => s.setNoDelay(true));
  server.on("secureConnection", (s: import("node:tls").TLSSocket) => s.setNoDelay(true));
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Uint8Array) => {
    socket.on("error", () => socket.destroy());
    for (const u of upgrades) if (u(req, socket, head)) return;
    refuseUpgrade(socket, 404, "not found");
  });
  server.on("clientError", (_e: Error, socket: Duplex) => socket.destroy());
  // Long-running requests (watch, logs -f, exec) must never be cut by a server timeout.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 65_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      server.on("error", (e: Error) => opts.log.error("front door error", { error: e }));
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        route: (h) => void routes.push(h),
        upgrade: (h) => void upgrades.push(h),
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections?.();
          }),
      });
    });
  });
}
