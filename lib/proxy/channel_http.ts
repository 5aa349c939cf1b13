/**
 * HTTP/1.1 over one long-lived byte stream (an SSH channel to an agent), request after request.
 *
 * The hub used to open a channel per API request and run `node:http`'s client over it: per request that
 * was an SSH channel open, its confirmation, EOF and close both ways, a client and its parser, and a new
 * connection on the agent's HTTP server. Keeping channels open and writing requests on them directly
 * leaves one SSH data packet each way for a small request. Deno's `node:http` client cannot do this over
 * a custom stream (see lib/server/channel_reserve.ts), hence this small client: it writes the request
 * itself and parses the response framing (Content-Length, chunked, or until close) incrementally, so
 * watches and `logs -f` still stream as they arrive.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";

/** The parsed head of a response. */
export interface ResponseHead {
  status: number;
  statusMessage: string;
  /** Header names and values, alternating, as received. */
  rawHeaders: string[];
  /** The value of one header (last one wins), lower-case name. */
  header(name: string): string | undefined;
}

/** Longest response head accepted. */
const maxHeadBytes = 256 * 1024;
/** Longest chunk-size or trailer line accepted. */
const maxLineBytes = 8 * 1024;

const crlf = Buffer.from("\r\n");
const headEnd = Buffer.from("\r\n\r\n");

type State = "head" | "length" | "chunk-size" | "chunk-data" | "chunk-crlf" | "trailers" | "close" | "done";

/** Why a response could not be read. */
export class ResponseFramingError extends Error {}

/**
 * Incremental response parser. `push` bytes as they arrive; handlers fire for the head, each body piece
 * (chunked framing removed) and the end. Throws ResponseFramingError on a malformed response.
 */
export class ResponseParser {
  #buf: Buffer = Buffer.alloc(0);
  #state: State = "head";
  #remaining = 0;
  /** False once the response says the connection ends with it, or framing went wrong. */
  keepAlive = true;
  /** Whether any response byte arrived. */
  started = false;

  constructor(
    private readonly method: string,
    private readonly on: {
      head(h: ResponseHead): void;
      data(piece: Uint8Array): void;
      done(): void;
    },
  ) {}

  get done(): boolean {
    return this.#state === "done";
  }

  push(chunk: Uint8Array): void {
    if (!chunk.length) return;
    this.started = true;
    if (this.#state === "done") {
      // Bytes after a complete response: the stream is out of step and must not be reused.
      this.keepAlive = false;
      return;
    }
    // A view, not a copy (Buffer.from(Uint8Array) copies): body bytes pass through untouched.
    const view = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, view]) : view;
    while (this.#step());
  }

  /** The stream ended: completes a close-delimited body, else the response was cut short. */
  eof(): void {
    this.keepAlive = false;
    if (this.#state === "close") return this.#finish();
    if (this.#state !== "done") throw new ResponseFramingError("the agent closed the channel mid-response");
  }

  #finish(): void {
    this.#state = "done";
    if (this.#buf.length) this.keepAlive = false;
    this.on.done();
  }

  /** Takes one step; false when more bytes are needed or the response is done. */
  #step(): boolean {
    const buf = this.#buf;
    switch (this.#state) {
      case "head": {
        const at = buf.indexOf(headEnd);
        if (at < 0) {
          if (buf.length > maxHeadBytes) throw new ResponseFramingError("response head too large");
          return false;
        }
        this.#buf = buf.subarray(at + 4);
        this.#head(buf.subarray(0, at).toString("latin1"));
        return true;
      }
      case "length":
      case "chunk-data":
      case "close": {
        if (!buf.length) return false;
        const n = this.#state === "close" ? buf.length : Math.min(this.#remaining, buf.length);
        this.#buf = buf.subarray(n);
        this.#remaining -= n;
        this.on.data(buf.subarray(0, n));
        if (this.#state === "close" || this.#remaining > 0) return false;
        if (this.#state === "length") {
          this.#finish();
          return false;
        }
        this.#state = "chunk-crlf";
        return true;
      }
      case "chunk-crlf": {
        if (buf.length < 2) return false;
        if (buf[0] !== 13 || buf[1] !== 10) throw new ResponseFramingError("chunk not followed by CRLF");
        this.#buf = buf.subarray(2);
        this.#state = "chunk-size";
        return true;
      }
      case "chunk-size": {
        const line = this.#line();
        if (line === undefined) return false;
        const hex = line.split(";")[0]!.trim();
        if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new ResponseFramingError(`bad chunk size '${hex}'`);
        const size = parseInt(hex, 16);
        if (size === 0) this.#state = "trailers";
        else {
          this.#remaining = size;
          this.#state = "chunk-data";
        }
        return true;
      }
      case "trailers": {
        const line = this.#line();
        if (line === undefined) return false;
        if (line === "") {
          this.#finish();
          return false;
        }
        return true; // trailer fields are dropped, like the hub's proxy drops them
      }
      case "done":
        return false;
    }
  }

  /** One CRLF-terminated line, or undefined until it is complete. */
  #line(): string | undefined {
    const at = this.#buf.indexOf(crlf);
    if (at < 0) {
      if (this.#buf.length > maxLineBytes) throw new ResponseFramingError("chunk line too long");
      return undefined;
    }
    const line = this.#buf.subarray(0, at).toString("latin1");
    this.#buf = this.#buf.subarray(at + 2);
    return line;
  }

  #head(text: string): void {
    const lines = text.split("\r\n");
    const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
    if (!m) throw new ResponseFramingError(`bad status line '${(lines[0] ?? "").slice(0, 80)}'`);
    const status = Number(m[2]);
    const rawHeaders: string[] = [];
    const last = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) throw new ResponseFramingError(`bad header line '${line.slice(0, 80)}'`);
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      rawHeaders.push(name, value);
      last.set(name.toLowerCase(), value);
    }
    // 1xx answers (100 Continue) precede the real one.
    if (status >= 100 && status < 200) return;
    if (m[1] === "0" || /(^|,)\s*close\s*(,|$)/i.test(last.get("connection") ?? "")) this.keepAlive = false;
    this.on.head({
      status,
      statusMessage: m[3] ?? "",
      rawHeaders,
      header: (name) => last.get(name),
    });
    const te = last.get("transfer-encoding");
    const length = last.get("content-length");
    if (this.method === "HEAD" || status === 204 || status === 304) this.#finish();
    else if (te !== undefined) {
      if (!/(^|,)\s*chunked\s*$/i.test(te)) this.#state = "close";
      else this.#state = "chunk-size";
    } else if (length !== undefined) {
      if (!/^\d{1,15}$/.test(length)) throw new ResponseFramingError(`bad Content-Length '${length}'`);
      this.#remaining = Number(length);
      if (this.#remaining === 0) this.#finish();
      else this.#state = "length";
    } else this.#state = "close";
    if (this.#state === "close") this.keepAlive = false;
  }
}

/** The request head as bytes. Header values never hold CR or LF (refused: they would split the head). */
export function requestHead(method: string, path: string, headers: http.OutgoingHttpHeaders): string {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (/[\r\n:]/.test(name)) throw new Error(`header name '${name}' holds a line break or a colon`);
    for (const v of Array.isArray(value) ? value : [String(value)]) {
      if (/[\r\n]/.test(v)) throw new Error(`header '${name}' holds a line break`);
      head += `${name}: ${v}\r\n`;
    }
  }
  return head + "\r\n";
}

/** How one exchange on a channel ended. */
export interface ExchangeResult {
  /** True when the channel may carry the next request. */
  reusable: boolean;
  /** Request body bytes sent. */
  bytesIn: number;
}

/** What {@link exchange} sends. */
export interface ExchangeRequest {
  method: string;
  path: string;
  headers: http.OutgoingHttpHeaders;
  /** The body, streamed (sent with Content-Length when `headers` has one, else chunked); none for GET. */
  body?: NodeJS.ReadableStream | undefined;
}

/**
 * Sends one request on `channel` and reads its response. Handlers get the head and every body piece as
 * it arrives (a caller with a slow client pauses the channel itself). Resolves once the response is
 * complete; rejects when the channel fails or the response is malformed, with `answered` on the error
 * telling whether any response byte arrived (a request that got none may be retried elsewhere).
 */
export function exchange(
  channel: Duplex,
  req: ExchangeRequest,
  on: { head(h: ResponseHead): void; data(piece: Uint8Array): void },
  abort: AbortSignal,
): Promise<ExchangeResult> {
  return new Promise((resolve, reject) => {
    let bytesIn = 0;
    let bodySent = req.body === undefined;
    let settled = false;
    const parser = new ResponseParser(req.method, { ...on, done: () => maybeDone() });
    const cleanup = () => {
      channel.off("data", onData);
      channel.off("end", onEnd);
      channel.off("close", onClose);
      channel.off("error", onError);
      abort.removeEventListener("abort", onAbort);
    };
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(Object.assign(e, { answered: parser.started }));
    };
    const maybeDone = () => {
      if (settled || !parser.done || !bodySent) return;
      settled = true;
      cleanup();
      resolve({ reusable: parser.keepAlive, bytesIn });
    };
    const onData = (c: Uint8Array) => {
      try {
        parser.push(c);
      } catch (e) {
        fail(e as Error);
      }
    };
    const onEnd = () => {
      try {
        parser.eof();
        maybeDone();
      } catch (e) {
        fail(e as Error);
      }
    };
    const onClose = () => fail(new Error("the channel closed before the response ended"));
    const onError = (e: Error) => fail(e);
    const onAbort = () => fail(new Error("client closed the connection"));
    channel.on("data", onData);
    channel.once("end", onEnd);
    channel.once("close", onClose);
    channel.once("error", onError);
    abort.addEventListener("abort", onAbort);
    channel.resume();

    const headers = { ...req.headers };
    const chunked = req.body !== undefined && headers["content-length"] === undefined;
    if (chunked) headers["transfer-encoding"] = "chunked";
    try {
      channel.write(requestHead(req.method, req.path, headers));
    } catch (e) {
      return fail(e as Error);
    }
    const body = req.body;
    if (!body) return;
    body.on("data", (c: Uint8Array) => {
      if (settled) return;
      bytesIn += c.length;
      const ok = chunked
        ? channel.write(Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, crlf]))
        : channel.write(c);
      if (!ok) {
        body.pause();
        channel.once("drain", () => body.resume());
      }
    });
    body.once("end", () => {
      if (chunked && !settled) channel.write("0\r\n\r\n");
      bodySent = true;
      maybeDone();
    });
    body.once("error", (e: Error) => fail(e));
  });
}
