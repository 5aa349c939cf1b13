/**
 * The HTTP conformance matrix, shared by the proxy's own test (front door → proxy → backend in one
 * process) and the end-to-end one (hub + agent to the real API server and to a real Service): write
 * patterns and answers real clients and servers produce, from a raw socket. After each case, a request on
 * the same connection (when HTTP leaves it open) and one on a new connection must both be answered within
 * 1 s: no case may wedge a connection another request needs.
 *
 * Run as a program (`deno run -A conformance.ts PORT`) it serves the matrix's backend and prints
 * `listening`.
 * @module
 */

import assert from "node:assert/strict";
import http from "node:http";
import type net from "node:net";
import { Buffer } from "node:buffer";
import { header, RawConnection, type RawResponse, type RawTarget, requestHead } from "./raw_http.ts";
import { eventually } from "./wait.ts";

/**
 * The backend of the matrix (node:http, the most common server shape); each path is one behaviour:
 * `/early` answers 401 without reading the body, `/nocontent` 204, `/notmodified` 304, `/trailers` a
 * chunked body with a trailer, `/stream?bytes=N` N bytes as fast as the reader takes them, anything else
 * echoes what arrived (`{ method, bytes, trailers }`); an `Upgrade: x-echo` request gets a 101 and then
 * every byte back.
 */
export function serveConformanceBackend(
  port: number,
  host: string,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://backend");
    const json = (code: number, value: unknown) => {
      const b = JSON.stringify(value);
      res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(b) });
      res.end(b);
    };
    switch (u.pathname) {
      case "/early":
        json(401, { denied: true });
        // Then the unread body is read and dropped, as Node's server does by itself (Deno's node:http
        // server does not: a large unread body wedges its connection).
        return void req.resume();
      case "/nocontent":
        req.resume();
        res.writeHead(204);
        return res.end();
      case "/notmodified":
        req.resume();
        res.writeHead(304, { etag: '"v1"' });
        return res.end();
      case "/trailers":
        req.resume();
        res.writeHead(200, { "content-type": "text/plain", trailer: "x-checksum" });
        res.write("part one;");
        res.write("part two");
        res.addTrailers({ "x-checksum": "abc123" });
        return res.end();
      case "/stream": {
        req.resume();
        const total = Number(u.searchParams.get("bytes"));
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total });
        const chunk = Buffer.alloc(65536, 120);
        let sent = 0;
        const pump = () => {
          while (sent < total) {
            const n = Math.min(chunk.length, total - sent);
            sent += n;
            if (!res.write(chunk.subarray(0, n))) return void res.once("drain", pump);
          }
          res.end();
        };
        return pump();
      }
      default: {
        let bytes = 0;
        req.on("data", (c: Uint8Array) => void (bytes += c.length));
        req.on("end", () => json(200, { method: req.method, bytes, trailers: req.trailers }));
      }
    }
  });
  // `Upgrade: x-echo`: a 101 naming the protocol, then every byte back.
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Uint8Array) => {
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n" +
        `X-Echo-Version: ${req.headers["x-echo-version"] ?? "none"}\r\n\r\n`,
    );
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  server.keepAliveTimeout = 0;
  return new Promise((resolve) =>
    server.listen(port, host, () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      }))
  );
}

/** One target of the matrix: where requests go and what a created/echoed body looks like there. */
export interface ConformanceTarget {
  name: string;
  /** Headers every request carries (Host, credentials). */
  headers: [string, string][];
  /** A cheap GET that must answer 200. */
  probe: string;
  /** Where a body goes. */
  sink: string;
  /** A body of about `size` bytes the sink accepts. */
  body(size: number): string;
  /** Checks the answer to a complete body of `bytes` bytes. */
  accepted(r: RawResponse, bytes: number): void;
  /** A path that answers before reading a body, and its status. */
  early: { path: string; status: number };
  /** Headers the proxy itself refuses (bad credentials) before reading a body, and its status. */
  refused?: { headers: [string, string][]; status: number };
  /** The answer to a 10 MiB body when the target refuses it (the API server takes at most 3 MiB). */
  tooLarge?: number;
  /** Requests that answer with no body: a GET path (or a function making the request) and the status. */
  bodiless: { name: string; status: number; request(c: RawConnection): Promise<RawResponse> }[];
  /** A path with a chunked answer and one trailer `x-checksum: abc123` (not every target has one). */
  trailers?: string;
  /** A path whose `Upgrade: x-echo` answers 101 and echoes (not every target has one). */
  upgrade?: string;
  /**
   * Makes the target stream at least `bytes` to connection `c` (already paused by the caller) without the
   * reader reading; resolves once that much is on its way. Returns the least byte count to expect.
   */
  slowStream(c: RawConnection, bytes: number): Promise<number>;
}

/** Whether the connection is still open for another request after `r` (HTTP's rules, as sent). */
function staysOpen(c: RawConnection, r: RawResponse): boolean {
  return !c.ended && !/close/i.test(header(r, "connection") ?? "");
}

/** A GET request head for `path` with `headers` (Host, credentials) and `extra`. */
export function getHead(headers: [string, string][], path: string, extra: [string, string][] = []): string {
  return requestHead("GET", path, [...headers, ...extra]);
}

function postHead(t: ConformanceTarget, path: string, extra: [string, string][]): string {
  return requestHead("POST", path, [...t.headers, ["Content-Type", "application/json"], ...extra]);
}

/** Runs every case of the matrix against `target` through `raw`, one test step each. */
export async function runConformance(
  t: Deno.TestContext,
  raw: RawTarget,
  target: ConformanceTarget,
): Promise<void> {
  const probeOn = async (c: RawConnection, what: string) => {
    await c.write(getHead(target.headers, target.probe));
    const r = await c.response("GET", 1000).catch((e) => {
      throw new Error(`${what}: no answer within 1 s (${(e as Error).message})`);
    });
    assert.equal(r.status, 200, `${what}: ${r.body.toString().slice(0, 200)}`);
  };
  const probeNew = async (what: string) => {
    const fresh = await RawConnection.open(raw);
    try {
      await probeOn(fresh, what);
    } finally {
      fresh.close();
    }
  };

  /** Runs one case; it returns whether its connection may carry another request. */
  const step = (name: string, run: (c: RawConnection) => Promise<boolean>) =>
    t.step({
      name: `${target.name}: ${name}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        const c = await RawConnection.open(raw);
        try {
          if (await run(c)) await probeOn(c, "the same connection");
        } finally {
          c.close();
        }
        await probeNew("a new connection");
      },
    });

  const sized = (size: number) => {
    const body = target.body(size);
    return { body, length: Buffer.byteLength(body) };
  };

  await step("body in the same write as the head", async (c) => {
    const { body, length } = sized(200);
    await c.write(postHead(target, target.sink, [["Content-Length", String(length)]]) + body);
    const r = await c.response("POST");
    target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("head, then the body 50 ms later", async (c) => {
    const { body, length } = sized(105);
    await c.write(postHead(target, target.sink, [["Content-Length", String(length)]]));
    await new Promise((r) => setTimeout(r, 50));
    await c.write(body);
    const r = await c.response("POST");
    target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("body split at every 1 KiB", async (c) => {
    const { body, length } = sized(8 * 1024 + 300);
    await c.write(postHead(target, target.sink, [["Content-Length", String(length)]]));
    for (let at = 0; at < length; at += 1024) await c.write(body.slice(at, at + 1024));
    const r = await c.response("POST");
    target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("chunked body with chunk extensions and trailers", async (c) => {
    const { body, length } = sized(3000);
    await c.write(
      postHead(target, target.sink, [["Transfer-Encoding", "chunked"], ["Trailer", "X-Checksum"]]),
    );
    for (let at = 0; at < length; at += 1000) {
      const piece = body.slice(at, at + 1000);
      await c.write(`${piece.length.toString(16)};piece=${at / 1000}\r\n${piece}\r\n`);
    }
    await c.write("0\r\nX-Checksum: 42\r\n\r\n");
    const r = await c.response("POST");
    target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("Expect: 100-continue", async (c) => {
    const { body, length } = sized(2000);
    await c.write(
      postHead(target, target.sink, [["Content-Length", String(length)], ["Expect", "100-continue"]]),
    );
    const interim = await c.response("POST", 1000);
    assert.equal(interim.status, 100, "100 Continue within 1 s");
    await c.write(body);
    const r = await c.response("POST");
    target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("two pipelined requests", async (c) => {
    await c.write(getHead(target.headers, target.probe) + getHead(target.headers, target.probe));
    const a = await c.response("GET", 2000);
    const b = await c.response("GET", 2000);
    assert.deepEqual([a.status, b.status], [200, 200]);
    return staysOpen(c, b);
  });

  // A client that half-closes is taken as gone (as Go's server does): a watch whose client went away
  // must end, and EOF is all the server sees. The connection may close without an answer; nothing else
  // may be held up by it.
  await step("client half-closes after the body", async (c) => {
    const { body, length } = sized(500);
    await c.write(postHead(target, target.sink, [["Content-Length", String(length)]]) + body);
    c.end();
    assert.ok(await c.closedWithin(5000), "the connection closes");
    return false;
  });

  await step("client goes away mid-body", async (c) => {
    await c.write(postHead(target, target.sink, [["Content-Length", String(64 * 1024)]]));
    await c.write("z".repeat(1024));
    c.close();
    return false;
  });

  await step("upstream answers before reading the body", async (c) => {
    await c.write(postHead(target, target.early.path, [["Content-Length", String(1 << 20)]]));
    await c.write("e".repeat(1 << 20));
    const r = await c.response("POST");
    assert.equal(r.status, target.early.status, r.body.toString().slice(0, 200));
    return staysOpen(c, r);
  });

  if (target.refused) {
    const refused = target.refused;
    await step("the proxy refuses before reading the body", async (c) => {
      await c.write(
        requestHead("POST", target.sink, [...refused.headers, ["Content-Length", String(1 << 20)]]) +
          "r".repeat(1 << 20),
      );
      const r = await c.response("POST");
      assert.equal(r.status, refused.status, r.body.toString().slice(0, 200));
      return staysOpen(c, r);
    });
  }

  await step("10 MiB body", async (c) => {
    const length = 10 * 1024 * 1024;
    await c.write(postHead(target, target.sink, [["Content-Length", String(length)]]));
    const piece = target.body(1 << 20).slice(0, 1 << 20);
    for (let i = 0; i < 10; i++) await c.write(piece);
    const r = await c.response("POST", 30_000);
    if (target.tooLarge) assert.equal(r.status, target.tooLarge, r.body.toString().slice(0, 200));
    else target.accepted(r, length);
    return staysOpen(c, r);
  });

  await step("HEAD", async (c) => {
    await c.write(requestHead("HEAD", target.probe, target.headers));
    const r = await c.response("HEAD");
    assert.ok(r.status < 500, `HEAD answered ${r.status}`);
    return staysOpen(c, r);
  });

  for (const b of target.bodiless) {
    await step(b.name, async (c) => {
      const r = await b.request(c);
      assert.equal(r.status, b.status);
      assert.equal(r.body.length, 0);
      return staysOpen(c, r);
    });
  }

  if (target.trailers) {
    const path = target.trailers;
    await step("response with trailers", async (c) => {
      await c.write(getHead(target.headers, path));
      const r = await c.response("GET");
      assert.equal(r.body.toString(), "part one;part two");
      assert.deepEqual(r.trailers.map(([n, v]) => [n.toLowerCase(), v]), [["x-checksum", "abc123"]]);
      return staysOpen(c, r);
    });
  }

  if (target.upgrade) {
    const path = target.upgrade;
    await step("upgrade: the 101 relayed exactly, then bytes both ways", async (c) => {
      await c.write(
        getHead(target.headers, path, [["Connection", "Upgrade"], ["Upgrade", "x-echo"], [
          "X-Echo-Version",
          "v7",
        ]]),
      );
      const r = await c.response("GET", 2000);
      assert.equal(r.status, 101);
      assert.deepEqual(r.headers, [["Upgrade", "x-echo"], ["Connection", "Upgrade"], [
        "X-Echo-Version",
        "v7",
      ]]);
      await c.write("ping");
      await eventually(2000, () => assert.ok(c.unread >= 4, "the echo"));
      return false;
    });
  }

  await step("slow reader on a stream", async (c) => {
    c.socket.pause();
    const least = await target.slowStream(c, 2 * 1024 * 1024);
    await probeNew("a new connection while a reader stalls");
    c.socket.resume();
    await eventually(
      20_000,
      () => assert.ok(c.unread >= least, `${c.unread} of ${least} bytes reached the reader`),
    );
    return false;
  });
}

if (import.meta.main) {
  await serveConformanceBackend(Number(Deno.args[0]), Deno.args[1] ?? "0.0.0.0");
  // deno-lint-ignore no-console
  console.log("listening");
}
