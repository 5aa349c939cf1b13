/**
 * A raw-socket HTTP/1.1 client for tests: the test decides every write (head and body split anywhere,
 * pauses between writes, pipelining, half-close), and responses are parsed from the bytes as they arrive.
 * It parses on its own, with no product code, so a framing bug in Tower cannot hide behind it.
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { Buffer } from "node:buffer";

/** Where to connect: TLS (the hub) when `ca` is given, else plain TCP. */
export interface RawTarget {
  host: string;
  port: number;
  /** PEM CA for TLS; none means plain TCP. */
  ca?: string;
  servername?: string;
}

/** One parsed response. */
export interface RawResponse {
  status: number;
  /** Header lines as received, names as sent. */
  headers: [string, string][];
  body: Buffer;
  trailers: [string, string][];
  /** Milliseconds from the call to {@link RawConnection.response} to the end of the response. */
  ms: number;
}

/** The value of a header (first one), case-insensitive. */
export function header(r: { headers: [string, string][] }, name: string): string | undefined {
  return r.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

/** Why a response could not be read in time. */
export class RawTimeout extends Error {}

/** Hard cap on what one test response may hold. */
const maxResponseBytes = 64 * 1024 * 1024;

/** A client connection whose bytes the test controls. */
export class RawConnection {
  readonly socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;
  #error: Error | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (c: Buffer) => {
      this.#buf = this.#buf.length ? Buffer.concat([this.#buf, c]) : c;
      if (this.#buf.length > maxResponseBytes) socket.destroy(new Error("test response too large"));
      this.#wake?.();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wake?.();
    });
    socket.on("error", (e) => {
      this.#error = e;
      this.#wake?.();
    });
  }

  /** Connects (and finishes the TLS handshake) before returning. */
  static open(t: RawTarget): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = t.ca
        ? tls.connect({ host: t.host, port: t.port, ca: t.ca, servername: t.servername })
        : net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
      socket.once(t.ca ? "secureConnect" : "connect", () => {
        socket.off("error", reject);
        resolve(new RawConnection(socket));
      });
      socket.once("error", reject);
    });
  }

  /** Writes bytes and waits until the socket took them. */
  write(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (e) => (e ? reject(e) : resolve()));
    });
  }

  /** Half-closes the connection (no more request bytes). */
  end(): void {
    this.socket.end();
  }

  /** Whether the server closed its side. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Bytes received and not yet parsed. */
  get unread(): number {
    return this.#buf.length;
  }

  close(): void {
    this.socket.destroy();
  }

  /** Waits for more bytes (or the end), at most until `deadline`. */
  async #more(deadline: number, what: string): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.#ended) throw new Error(`connection closed while waiting for ${what}`);
    const left = deadline - performance.now();
    if (left <= 0) throw new RawTimeout(`no ${what} in time`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
    if (this.#error) throw this.#error;
  }

  /** Takes one CRLF-terminated line. */
  async #line(deadline: number, what: string): Promise<string> {
    for (;;) {
      const at = this.#buf.indexOf("\r\n");
      if (at >= 0) {
        const line = this.#buf.subarray(0, at).toString("latin1");
        this.#buf = this.#buf.subarray(at + 2);
        return line;
      }
      await this.#more(deadline, what);
    }
  }

  async #bytes(n: number, deadline: number, what: string): Promise<Buffer> {
    while (this.#buf.length < n) await this.#more(deadline, what);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /**
   * Reads the next response (interim 1xx answers are returned too, so a test sees `100 Continue`).
   * `method` decides whether a body follows (HEAD has none). Throws {@link RawTimeout} after `timeoutMs`.
   */
  async response(method = "GET", timeoutMs = 10_000): Promise<RawResponse> {
    const started = performance.now();
    const deadline = started + timeoutMs;
    const statusLine = await this.#line(deadline, "status line");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) throw new Error(`bad status line '${statusLine.slice(0, 100)}'`);
    const status = Number(m[1]);
    const headers = await this.#fields(deadline, "header");
    const done = (body: Buffer, trailers: [string, string][] = []) => ({
      status,
      headers,
      body,
      trailers,
      ms: performance.now() - started,
    });
    if (status < 200 || method === "HEAD" || status === 204 || status === 304) return done(Buffer.alloc(0));
    const te = header({ headers }, "transfer-encoding");
    const cl = header({ headers }, "content-length");
    if (te && /chunked/i.test(te)) {
      const parts: Buffer[] = [];
      for (;;) {
        const size = parseInt((await this.#line(deadline, "chunk size")).split(";")[0]!, 16);
        if (!Number.isFinite(size)) throw new Error("bad chunk size");
        if (size === 0) return done(Buffer.concat(parts), await this.#fields(deadline, "trailer"));
        parts.push(await this.#bytes(size, deadline, "chunk"));
        if ((await this.#line(deadline, "chunk end")) !== "") throw new Error("chunk not followed by CRLF");
      }
    }
    if (cl !== undefined) return done(await this.#bytes(Number(cl), deadline, "body"));
    while (!this.#ended) await this.#more(deadline, "close-delimited body");
    const body = this.#buf;
    this.#buf = Buffer.alloc(0);
    return done(body);
  }

  /** Header or trailer fields up to the empty line. */
  async #fields(deadline: number, what: string): Promise<[string, string][]> {
    const out: [string, string][] = [];
    for (;;) {
      const line = await this.#line(deadline, what);
      if (line === "") return out;
      const colon = line.indexOf(":");
      if (colon <= 0) throw new Error(`bad ${what} line '${line.slice(0, 100)}'`);
      out.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
    }
  }

  /** Waits until the server closes the connection (or `timeoutMs` passes: then false). */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    try {
      while (!this.#ended) await this.#more(deadline, "close");
      return true;
    } catch (e) {
      if (e instanceof RawTimeout) return false;
      return true;
    }
  }
}

/** A request head as text: `headers` in order, then the empty line. */
export function requestHead(method: string, path: string, headers: [string, string][]): string {
  return `${method} ${path} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join("")}\r\n`;
}
