/**
 * A separate listener that serves only `/metrics`, for `--metrics-listen` on the hub and the agent: a
 * scrape address that can stay on an internal network, without credentials.
 * @module
 */

import http from "node:http";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";
import type { Registry } from "prom-client";
import type { Logger } from "../log/log.ts";

/** A running metrics listener. */
export interface MetricsListener {
  port: number;
  close(): Promise<void>;
}

/** Writes the registry's text exposition (or 405/404) as the answer to `req`. */
export async function answerMetrics(
  registry: Registry,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
    res.end("only GET\n");
    return;
  }
  const text = await registry.metrics();
  res.writeHead(200, {
    "content-type": registry.contentType,
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(req.method === "HEAD" ? undefined : text);
}

/** Serves `registry` at `http://host:port/metrics`. */
export function startMetricsListener(
  host: string,
  port: number,
  registry: Registry,
  log: Logger,
): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    if ((req.url ?? "/").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found; metrics are at /metrics\n");
      return;
    }
    answerMetrics(registry, req, res).catch((e) => {
      log.error("metrics not rendered", { error: e });
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
