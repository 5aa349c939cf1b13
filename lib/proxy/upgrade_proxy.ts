/**
 * An upgrade-aware HTTP/1.1 reverse proxy, used on both sides of the tunnel (hub: user → channel;
 * agent: channel → kube-apiserver). It is configured only with *where to send* (an {@link Upstream}) and
 * *how to rewrite* (the target path and headers); routing, authentication and audit wrap it.
 *
 * Plain requests stream both ways chunk by chunk (watches, `logs -f`) with no timeout. Upgrades (WebSocket,
 * SPDY/3.1) forward the request headers, relay the upstream's 101 byte-exact, then splice raw bytes both
 * ways with half-close.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { splice } from "../tunnel/mod.ts";
import { endToEndHeaders } from "./hop_headers.ts";

/** Where proxied requests go: starts one upstream request per call. */
export interface Upstream {
  request(
    options: { method: string; path: string; headers: http.OutgoingHttpHeaders },
  ): Promise<http.ClientRequest>;
}

/** Response pieces are gathered up to this size (or the end of the event-loop turn) before writing. */
const coalesceBytes = 64 * 1024;

/** What the proxy sends upstream for one request. */
export interface ProxyTarget {
  path: string;
  headers: http.OutgoingHttpHeaders;
}

/** What happened to one proxied request or stream, for the audit line. */
export interface ProxyOutcome {
  status: number;
  /** Bytes from the client (request body, or client→server stream bytes after an upgrade). */
  bytesIn: number;
  /** Bytes to the client. */
  bytesOut: number;
  upgraded: boolean;
  error?: string;
}

/**
 * Writes a response body to `res` as it arrives, not with `pipe()`, for two reasons measured here:
 * - API servers write lists in ~2 KiB pieces; one SSH packet (and one cipher call) per piece made a 12 MB
 *   list 8× slower than direct. Pieces that arrive in the same turn go out as one write (up to 64 KiB).
 * - In Deno, a response with Content-Length whose last bytes are written before a separate end() wedges
 *   the keep-alive connection (the next response never goes out), so the piece that completes the length
 *   is sent with end().
 */
export class BodyRelay {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #written = 0;
  #scheduled = false;

  /** `length` is the Content-Length (NaN when there is none); `source` is paused while `res` is full. */
  constructor(
    private readonly res: http.ServerResponse,
    private readonly length: number,
    private readonly source: { pause(): void; resume(): void },
  ) {}

  data(c: Uint8Array): void {
    this.#written += c.length;
    this.#pending.push(c);
    this.#pendingBytes += c.length;
    if (this.#pendingBytes >= coalesceBytes || this.#written >= this.length) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  end(): void {
    this.#flush();
    if (!this.res.writableEnded) this.res.end();
  }

  #flush(): void {
    this.#scheduled = false;
    const res = this.res;
    if (!this.#pending.length || res.writableEnded) return;
    const out = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (this.#written >= this.length) return void res.end(out);
    if (!res.write(out)) {
      this.source.pause();
      res.once("drain", () => this.source.resume());
    }
  }
}

/** Sends an upstream response's status and end-to-end headers to the client. */
export function relayHead(
  res: http.ServerResponse,
  method: string,
  status: number,
  statusMessage: string,
  rawHeaders: string[],
): void {
  const headers = endToEndHeaders(rawHeaders);
  res.writeHead(status, statusMessage, headers);
  // A streamed body (watch, logs -f) may not write its first chunk for minutes: send headers now. Not
  // for answers that never have a body (HEAD, 204, 304, e.g. kubectl revalidating its OpenAPI cache):
  // Deno's node:https server then never writes the next response on that keep-alive connection.
  const bodiless = method === "HEAD" || status === 204 || status === 304;
  if (!bodiless && headers["content-length"] === undefined) res.flushHeaders();
}

/** Proxies a plain request; `res` gets upstream's status, headers and body as they arrive. */
export async function proxyRequest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  target: ProxyTarget,
  upstream: Upstream,
  onError: (error: Error) => void,
): Promise<ProxyOutcome> {
  const outcome: ProxyOutcome = { status: 0, bytesIn: 0, bytesOut: 0, upgraded: false };
  let up: http.ClientRequest;
  try {
    up = await upstream.request({ method: req.method ?? "GET", path: target.path, headers: target.headers });
  } catch (e) {
    req.resume();
    onError(e as Error);
    outcome.error = (e as Error).message;
    return outcome;
  }
  return await new Promise<ProxyOutcome>((resolve) => {
    let settled = false;
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      if (error) outcome.error = error.message;
      resolve(outcome);
    };
    req.on("data", (c: Uint8Array) => void (outcome.bytesIn += c.length));
    req.pipe(up);
    up.once("response", (ures: http.IncomingMessage) => {
      outcome.status = ures.statusCode ?? 502;
      relayHead(res, req.method ?? "GET", outcome.status, ures.statusMessage ?? "", ures.rawHeaders);
      const relay = new BodyRelay(res, Number(ures.headers["content-length"]), {
        pause: () => ures.pause(),
        resume: () => ures.resume(),
      });
      ures.on("data", (c: Uint8Array) => {
        outcome.bytesOut += c.length;
        relay.data(c);
      });
      ures.once("end", () => {
        relay.end();
        settle();
      });
      ures.once("error", (e: Error) => {
        res.destroy();
        settle(e);
      });
    });
    up.once("error", (e: Error) => {
      if (!res.headersSent) onError(e);
      else res.destroy();
      settle(e);
    });
    // The client went away (e.g. ended a watch): end the upstream request and its channel too.
    res.once("close", () => {
      if (!res.writableFinished) {
        up.destroy();
        settle(new Error("client closed the connection"));
      }
    });
  });
}

/** Proxies an upgrade request: 101 relayed byte-exact, then a raw splice until both sides are done. */
export async function proxyUpgrade(
  req: http.IncomingMessage,
  socket: Duplex,
  head: Uint8Array,
  target: ProxyTarget,
  upstream: Upstream,
  onError: (error: Error) => void,
): Promise<ProxyOutcome> {
  const outcome: ProxyOutcome = { status: 0, bytesIn: 0, bytesOut: 0, upgraded: false };
  const headers: http.OutgoingHttpHeaders = {
    ...target.headers,
    connection: "Upgrade",
    upgrade: req.headers.upgrade ?? "",
  };
  let up: http.ClientRequest;
  try {
    up = await upstream.request({ method: req.method ?? "GET", path: target.path, headers });
  } catch (e) {
    onError(e as Error);
    outcome.error = (e as Error).message;
    return outcome;
  }
  return await new Promise<ProxyOutcome>((resolve) => {
    const fail = (e: Error) => {
      outcome.error = e.message;
      onError(e);
      resolve(outcome);
    };
    up.once("error", fail);
    up.once("upgrade", (ures: http.IncomingMessage, usocket: Duplex, uhead: Uint8Array) => {
      up.off("error", fail);
      outcome.status = ures.statusCode ?? 101;
      outcome.upgraded = true;
      (usocket as Partial<import("node:net").Socket>).setNoDelay?.(true);
      let lines = `HTTP/1.1 ${ures.statusCode} ${ures.statusMessage ?? "Switching Protocols"}\r\n`;
      for (let i = 0; i < ures.rawHeaders.length; i += 2) {
        lines += `${ures.rawHeaders[i]}: ${ures.rawHeaders[i + 1]}\r\n`;
      }
      socket.write(lines + "\r\n");
      if (uhead.length) socket.write(uhead);
      if (head.length) usocket.write(head);
      splice(socket, usocket, (stats) => {
        outcome.bytesIn = stats.aToB + head.length;
        outcome.bytesOut = stats.bToA + uhead.length;
        if (stats.error) outcome.error = stats.error.message;
        resolve(outcome);
      });
    });
    // Upstream declined the upgrade: relay its answer (kubectl reads the Status body) and close.
    up.once("response", (ures: http.IncomingMessage) => {
      up.off("error", fail);
      outcome.status = ures.statusCode ?? 502;
      const h = endToEndHeaders(ures.rawHeaders);
      delete h["content-length"];
      let lines = `HTTP/1.1 ${ures.statusCode} ${ures.statusMessage ?? ""}\r\n`;
      for (const [k, v] of Object.entries(h)) {
        for (const one of Array.isArray(v) ? v : [String(v)]) lines += `${k}: ${one}\r\n`;
      }
      socket.write(lines + "connection: close\r\n\r\n");
      ures.on("data", (c: Uint8Array) => {
        outcome.bytesOut += c.length;
        socket.write(c);
      });
      ures.once("end", () => {
        socket.end();
        resolve(outcome);
      });
      ures.once("error", () => {
        socket.destroy();
        resolve(outcome);
      });
    });
    socket.once("close", () => {
      if (!outcome.upgraded) up.destroy();
    });
    up.end();
  });
}
