/**
 * The upgrade-aware HTTP/1.1 reverse proxy, the only one Tower has: hub (user → agent channel), agent
 * (channel → kube-apiserver) and Service requests all go through it. Each call says *where to send* (a
 * {@link DuplexClients}) and *how to rewrite* (target path and end-to-end headers); routing,
 * authentication and audit wrap it, and the error format is injected (a {@link Responder}), as in Go's
 * `httputil.ReverseProxy` and k8s' `UpgradeAwareHandler`.
 *
 * Plain requests stream both ways as bytes arrive (watches, `logs -f`) with backpressure and no timeout.
 * A stream of delimited messages (a watch) can be wound down: ended cleanly right after a message, when
 * the hub drains (`windDownEvent` on the response) or when the peer replica relaying its upstream does
 * ({@link Lease.onWindDown}). Losing the upstream in any other way cuts it, so that a client never takes
 * a dead agent for a normal end.
 * Upgrades (WebSocket, SPDY/3.1) relay the upstream's 101 exactly, then splice raw bytes both ways with
 * half-close. Wound down (the same two ways), an upgraded stream is closed as its protocol says at a
 * frame boundary (upgrade_close.ts); one of an unknown protocol just ends.
 * @module
 */

import type http from "node:http";
import { type Duplex, PassThrough } from "node:stream";
import { Buffer } from "node:buffer";
import type { Dispatcher } from "undici";
import { askedToWindDown, splice, windDownEvent } from "../tunnel/mod.ts";
import type { DuplexClients, Lease } from "./duplex_clients.ts";
import { endToEndHeaders, headerRecord, rawHeaderValue, rawResponseHead } from "./hop_headers.ts";
import { type MessageFraming, messageFraming } from "./message_framing.ts";
import { ClosingSocket, framedProtocol } from "./upgrade_close.ts";

/** Where one request goes and what it looks like there. */
export interface ProxyTarget<C> {
  upstream: DuplexClients<C>;
  path: string;
  /** End-to-end headers, already rewritten for the target. */
  headers: http.OutgoingHttpHeaders;
  /**
   * Whether a 2xx streamed answer is a stream of messages that may be wound down between two of them (a
   * watch, a followed log; the client resumes it), when its `Content-Type` says where messages end
   * (message_framing.ts). Never in the middle of a message.
   */
  endsBetweenMessages?: boolean;
  /**
   * Whether a wound-down upgraded stream is closed as its protocol says (a WebSocket Close, a SPDY GOAWAY)
   * at a frame boundary. Following the frames costs a little, so only where a stream can be wound down.
   */
  framedClose?: boolean;
}

/** What happened to one proxied request or stream, for the audit line. */
export interface ProxyOutcome<C> {
  status: number;
  /** Bytes from the client (request body, or client→server stream bytes after an upgrade). */
  bytesIn: number;
  /** Bytes to the client. */
  bytesOut: number;
  upgraded: boolean;
  error?: string;
  /** What carried the request (e.g. the agent session), when it reached the upstream. */
  carrier?: C;
}

/**
 * Writes the errors the proxy itself answers with (the caller's format, e.g. metav1.Status). `cause` is
 * what failed (the upstream's dial, say), so the caller may answer its own errors with its own status;
 * each returns the status it answered with.
 */
export interface Responder {
  /** On a plain request whose response head is not sent yet. */
  error(res: http.ServerResponse, code: number, message: string, cause: Error): number;
  /** On the raw socket of an upgrade request, before anything was written to it. */
  socketError(socket: Duplex, code: number, message: string, cause: Error): number;
}

/** Sends of one bodiless request at most, when connections fail before any answer. */
const maxAttempts = 3;

/** Response pieces are gathered up to this size (or the end of the event-loop turn) before writing. */
const coalesceBytes = 64 * 1024;

/**
 * Writes a response body to `res` as it arrives, for two reasons measured here:
 * - API servers write lists in ~2 KiB pieces; one SSH packet (and one cipher call) per piece made a 12 MB
 *   list 8× slower than direct. Pieces that arrive in the same turn go out as one write (up to 64 KiB).
 * - Deno's TLS socket never completes a zero-length write, and `ServerResponse.end()` with no data
 *   issues one when the socket still holds bytes: the response never finishes and its keep-alive
 *   connection is wedged. The piece that completes a Content-Length is therefore sent with `end()`.
 * - undici hands over an empty body piece when it resumes a paused response. Written, that empty piece is
 *   a zero-length write on the client's TLS socket, after which Deno 2.9.6's TLS socket fails every later
 *   write with EPERM ("Write after DestroySSL"): 1.5 MB responses were cut short in about half the runs.
 *   Empty pieces are dropped.
 * `data` returns false while `res` is full; `resume` runs when it drained.
 */
export class BodyRelay {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #written = 0;
  #scheduled = false;
  #blocked = false;

  /** `length` is the Content-Length (NaN when there is none). */
  constructor(
    private readonly res: http.ServerResponse,
    private readonly length: number,
    private readonly resume: () => void,
  ) {}

  data(c: Uint8Array): boolean {
    if (c.length === 0) return !this.#blocked;
    this.#written += c.length;
    this.#pending.push(c);
    this.#pendingBytes += c.length;
    if (this.#pendingBytes >= coalesceBytes || this.#written >= this.length) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
    return !this.#blocked;
  }

  /** Ends the response, with the upstream's trailers when the body was chunked. */
  end(trailers: readonly string[] = []): void {
    this.#flush();
    const res = this.res;
    if (res.writableEnded) return;
    if (trailers.length && Number.isNaN(this.length)) {
      const t: [string, string][] = [];
      for (let i = 0; i < trailers.length; i += 2) t.push([trailers[i]!, trailers[i + 1]!]);
      res.addTrailers(t);
    }
    res.end();
  }

  #flush(): void {
    this.#scheduled = false;
    const res = this.res;
    if (!this.#pending.length || res.writableEnded) return;
    const out = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (this.#written >= this.length) return void res.end(out);
    if (!res.write(out) && !this.#blocked) {
      this.#blocked = true;
      res.once("drain", () => {
        this.#blocked = false;
        this.resume();
      });
    }
  }
}

/** Sends an upstream response's status and end-to-end headers to the client. */
function relayHead(
  res: http.ServerResponse,
  method: string,
  status: number,
  statusText: string,
  rawHeaders: readonly string[],
): void {
  const headers = endToEndHeaders(rawHeaders);
  res.writeHead(status, statusText, headers);
  // A streamed body (watch, logs -f) may not write its first chunk for minutes: send headers now. Not
  // for answers that never have a body (HEAD, 204, 304): flushing first leaves end() with nothing to
  // write, which on Deno's TLS socket never completes (see BodyRelay).
  const bodiless = method === "HEAD" || status === 204 || status === 304;
  if (!bodiless && headers["content-length"] === undefined) res.flushHeaders();
}

/** Header bytes from undici as text. */
function strings(raw: readonly (Buffer | string)[] | null | undefined): string[] {
  return (raw ?? []).map((b) => (typeof b === "string" ? b : b.toString("latin1")));
}

/** Whether a request carries a body (and so cannot be sent twice). */
function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return length !== undefined ? length !== "0" : req.headers["transfer-encoding"] !== undefined;
}

/** The upgrade-aware reverse proxy; see the module note. */
export class ReverseProxy {
  constructor(private readonly respond: Responder) {}

  /**
   * Proxies a plain request; `res` gets the upstream's status, headers, body and trailers as they arrive.
   * A request without a body whose connection fails before any answer (it went stale, its agent or the
   * peer relaying it went away) is sent again on a new connection, up to {@link maxAttempts} times in all:
   * a reused connection, or one opened ahead of need, may have died just before it was taken. A
   * connection that could not be opened at all is not tried again.
   */
  async request<C>(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    target: ProxyTarget<C>,
  ): Promise<ProxyOutcome<C>> {
    const outcome: ProxyOutcome<C> = { status: 0, bytesIn: 0, bytesOut: 0, upgraded: false };
    const withBody = hasBody(req);
    for (let attempt = 0;; attempt++) {
      const lease = target.upstream.acquire(attempt > 0);
      const mayRetry = attempt + 1 < maxAttempts;
      const retry = await this.#exchange(req, res, target, lease, withBody, outcome, mayRetry);
      if (!retry) return outcome;
    }
  }

  /** One attempt; resolves true when the request should go out again on another connection. */
  #exchange<C>(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    target: ProxyTarget<C>,
    lease: Lease<C>,
    withBody: boolean,
    outcome: ProxyOutcome<C>,
    mayRetry: boolean,
  ): Promise<boolean> {
    const method = req.method ?? "GET";
    return new Promise<boolean>((resolve) => {
      let answered = false;
      let settled = false;
      let clientGone = false;
      let abort: ((e: Error) => void) | undefined;
      let relay: BodyRelay | undefined;
      // Wind-down: `framing` once a 2xx streamed answer of messages started; `woundDown` once it was
      // ended at a boundary (and its upstream aborted).
      let framing: MessageFraming | undefined;
      let windingDown = false;
      let woundDown = false;
      const endAtBoundary = () => {
        if (settled) return;
        woundDown = true;
        relay!.end();
        abort?.(new Error("wound down after a message"));
        settle(false);
      };
      const windDown = () => {
        if (windingDown || settled) return;
        windingDown = true;
        // Anything but a stream of messages finishes by itself (or is cut when its upstream goes).
        if (framing?.atBoundary) endAtBoundary();
      };
      const onClose = () => {
        if (res.writableFinished) return;
        clientGone = true;
        abort?.(new Error("client closed the connection"));
      };
      res.once("close", onClose);
      const settle = (reusable: boolean, retry = false) => {
        if (settled) return;
        settled = true;
        res.off("close", onClose);
        res.off(windDownEvent, windDown);
        // An upstream may answer before reading the whole body (401, 413): the rest is read and
        // dropped, so the client's keep-alive connection can carry its next request.
        if (body && !req.complete) {
          req.unpipe(body);
          req.resume();
        }
        const carrier = lease.carrier();
        if (carrier !== undefined) outcome.carrier = carrier;
        lease.release(reusable);
        resolve(retry);
      };
      res.on(windDownEvent, windDown);
      lease.onWindDown(windDown);
      const body = withBody ? countedBody(req, outcome) : null;
      const handler: Dispatcher.DispatchHandler = {
        onConnect: (a) => {
          abort = a;
          if (clientGone) a(new Error("client closed the connection"));
        },
        onHeaders: (status, rawHeaders, resume, statusText) => {
          if (status < 200) return true; // 100 Continue stays on its hop
          answered = true;
          outcome.status = status;
          const raw = strings(rawHeaders);
          relayHead(res, method, status, statusText, raw);
          const headers = endToEndHeaders(raw);
          const length = Number(headers["content-length"]);
          relay = new BodyRelay(res, length, resume);
          if (target.endsBetweenMessages && status < 300 && Number.isNaN(length)) {
            framing = messageFraming(
              String(headers["content-type"] ?? ""),
              String(headers["content-encoding"] ?? ""),
            );
          }
          // Asked before the answer came: it ends before its first message.
          if (windingDown && framing) queueMicrotask(endAtBoundary);
          return true;
        },
        onData: (chunk) => {
          if (woundDown) return false;
          if (framing) {
            const n = framing.take(chunk, windingDown);
            if (windingDown && framing.atBoundary) {
              // The rest of the message in progress goes out, nothing after it.
              outcome.bytesOut += n;
              if (n) relay!.data(chunk.subarray(0, n));
              endAtBoundary();
              return false;
            }
          }
          outcome.bytesOut += chunk.length;
          return relay!.data(chunk);
        },
        onComplete: (trailers) => {
          if (woundDown) return;
          relay?.end(strings(trailers));
          settle(true);
        },
        onError: (e) => {
          if (woundDown) return;
          const connected = lease.carrier() !== undefined;
          if (!answered && mayRetry && connected && !withBody && !clientGone) return settle(false, true);
          outcome.error = e.message;
          if (!res.headersSent) outcome.status = this.respond.error(res, 502, e.message, e);
          else res.destroy();
          settle(false);
        },
      };
      try {
        lease.client.dispatch({
          method: method as Dispatcher.HttpMethod,
          path: target.path,
          headers: headerRecord(target.headers),
          body,
          headersTimeout: 0,
          bodyTimeout: 0,
        }, handler);
      } catch (e) {
        handler.onError!(e as Error);
      }
    });
  }

  /** Proxies an upgrade request: the 101 relayed exactly, then a raw splice until both sides are done. */
  upgrade<C>(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Uint8Array,
    target: ProxyTarget<C>,
  ): Promise<ProxyOutcome<C>> {
    const outcome: ProxyOutcome<C> = { status: 0, bytesIn: 0, bytesOut: 0, upgraded: false };
    const lease = target.upstream.acquire();
    return new Promise((resolve) => {
      let abort: ((e: Error) => void) | undefined;
      let wrote = false;
      let settled = false;
      const onClose = () => {
        if (!outcome.upgraded) abort?.(new Error("client closed the connection"));
      };
      socket.once("close", onClose);
      const settle = () => {
        if (settled) return;
        settled = true;
        const carrier = lease.carrier();
        if (carrier !== undefined) outcome.carrier = carrier;
        // An upgraded connection left the client for good; a declined one ends with `connection: close`.
        lease.release(false);
        resolve(outcome);
      };
      const handler: Dispatcher.DispatchHandler = {
        onConnect: (a) => {
          abort = a;
          if (socket.destroyed) a(new Error("client closed the connection"));
        },
        onUpgrade: (status, rawHeaders, upstream) => {
          socket.off("close", onClose);
          outcome.status = status;
          outcome.upgraded = true;
          const carrier = lease.carrier();
          if (carrier !== undefined) outcome.carrier = carrier;
          lease.release(false);
          (upstream as Partial<import("node:net").Socket>).setNoDelay?.(true);
          const raw = strings(rawHeaders);
          socket.write(rawResponseHead(status, "Switching Protocols", raw));
          if (head.length) upstream.write(head);
          const protocol = target.framedClose ? framedProtocol(rawHeaderValue(raw, "upgrade")) : undefined;
          const client = protocol ? new ClosingSocket(socket, protocol) : socket;
          const windDown = () => client instanceof ClosingSocket ? client.windDown() : void socket.end();
          socket.on(windDownEvent, windDown);
          upstream.once(windDownEvent, windDown);
          splice(client, upstream, (stats) => {
            socket.off(windDownEvent, windDown);
            outcome.bytesIn = stats.aToB + head.length;
            outcome.bytesOut = stats.bToA;
            if (stats.error) outcome.error = stats.error.message;
            settled = true;
            resolve(outcome);
          });
          // A relayed channel may have been asked to wind down before it carried this stream.
          if (askedToWindDown(upstream)) windDown();
        },
        // The upstream declined the upgrade: relay its answer (kubectl reads the Status body) and close.
        onHeaders: (status, rawHeaders, _resume, statusText) => {
          if (status < 200) return true;
          outcome.status = status;
          wrote = true;
          socket.write(rawResponseHead(status, statusText, strings(rawHeaders)));
          return true;
        },
        onData: (chunk) => {
          outcome.bytesOut += chunk.length;
          socket.write(chunk); // a Status body: small, and the connection closes after it
          return true;
        },
        onComplete: () => {
          socket.end();
          settle();
        },
        onError: (e) => {
          outcome.error = e.message;
          if (!wrote && !socket.destroyed) {
            outcome.status = this.respond.socketError(socket, 502, e.message, e);
          } else socket.destroy();
          settle();
        },
      };
      try {
        lease.client.dispatch({
          method: (req.method ?? "GET") as Dispatcher.HttpMethod,
          path: target.path,
          headers: headerRecord(target.headers),
          upgrade: req.headers.upgrade ?? "",
          body: null,
          headersTimeout: 0,
          bodyTimeout: 0,
        }, handler);
      } catch (e) {
        handler.onError!(e as Error);
      }
    });
  }
}

/**
 * The request body as undici reads it (through a pipe, so the proxy can take it back when the upstream
 * answers early), counting bytes for the audit line.
 */
function countedBody<C>(req: http.IncomingMessage, outcome: ProxyOutcome<C>): PassThrough {
  const body = new PassThrough();
  req.on("data", (c: Uint8Array) => void (outcome.bytesIn += c.length));
  req.pipe(body);
  return body;
}
