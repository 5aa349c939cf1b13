/**
 * The hub's HTTP/1.1 client for kept-alive channels (lib/proxy/channel_http.ts): response framing split
 * at every byte, bodiless answers, 1xx, close-delimited bodies, malformed input, and real exchanges with
 * `node:http`'s server on one reused connection.
 * @module
 */

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { Buffer } from "node:buffer";
import { Readable } from "node:stream";
import {
  exchange,
  requestHead,
  ResponseFramingError,
  type ResponseHead,
  ResponseParser,
} from "../../../lib/proxy/mod.ts";

interface Parsed {
  head?: ResponseHead;
  body: string;
  done: boolean;
  keepAlive: boolean;
}

/** Feeds `wire` to a parser in pieces of `step` bytes. */
function parse(wire: string, step: number, method = "GET", eof = false): Parsed {
  const out: Parsed = { body: "", done: false, keepAlive: true };
  const p = new ResponseParser(method, {
    head: (h) => (out.head = h),
    data: (c) => (out.body += Buffer.from(c).toString("latin1")),
    done: () => (out.done = true),
  });
  const bytes = Buffer.from(wire, "latin1");
  for (let i = 0; i < bytes.length; i += step) p.push(bytes.subarray(i, i + step));
  if (eof) p.eof();
  out.keepAlive = p.keepAlive;
  return out;
}

const everySplit = (wire: string) => [1, 2, 3, 7, 64, wire.length];

Deno.test("ResponseParser: Content-Length bodies at every split; headers kept in order", () => {
  const wire = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: 1\r\nX-A: 2\r\n" +
    'Content-Length: 11\r\n\r\n{"a":"bcd"}';
  for (const step of everySplit(wire)) {
    const r = parse(wire, step);
    assert.equal(r.head?.status, 200);
    assert.equal(r.head?.statusMessage, "OK");
    assert.deepEqual(r.head?.rawHeaders.slice(2, 6), ["X-A", "1", "X-A", "2"]);
    assert.equal(r.body, '{"a":"bcd"}', `step ${step}`);
    assert.ok(r.done && r.keepAlive);
  }
});

Deno.test("ResponseParser: chunked bodies with extensions and trailers, at every split", () => {
  const wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "5;ext=1\r\nhello\r\n1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (const step of everySplit(wire)) {
    const r = parse(wire, step);
    assert.equal(r.body, "hello 0123456789abcdef", `step ${step}`);
    assert.ok(r.done && r.keepAlive);
  }
});

Deno.test("ResponseParser: HEAD, 204 and 304 have no body whatever their headers say; 1xx is skipped", () => {
  const head = parse("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", 5, "HEAD");
  assert.ok(head.done && head.keepAlive && head.body === "");
  for (const status of ["204 No Content", "304 Not Modified"]) {
    const r = parse(`HTTP/1.1 ${status}\r\nETag: "x"\r\n\r\n`, 3);
    assert.ok(r.done && r.keepAlive && r.body === "", status);
  }
  const cont = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 4);
  assert.equal(cont.head?.status, 201);
  assert.equal(cont.body, "ok");
});

Deno.test("ResponseParser: a body without length ends with the stream; Connection: close ends reuse", () => {
  const open = parse("HTTP/1.1 200 OK\r\n\r\nstreamed until close", 6);
  assert.equal(open.done, false);
  assert.equal(open.body, "streamed until close");
  const closed = parse("HTTP/1.1 200 OK\r\n\r\nstreamed until close", 6, "GET", true);
  assert.ok(closed.done && !closed.keepAlive);
  const conn = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 100);
  assert.ok(conn.done && !conn.keepAlive);
  const old = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
  assert.ok(old.done && !old.keepAlive);
  const extra = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSURPRISE", 100);
  assert.ok(extra.done && !extra.keepAlive, "bytes after a response: the channel is out of step");
});

Deno.test("ResponseParser: malformed responses and cut-short bodies are errors", () => {
  for (
    const wire of [
      "SSH-2.0-x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY",
    ]
  ) assert.throws(() => parse(wire, 3), ResponseFramingError, JSON.stringify(wire));
  assert.throws(
    () => parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 3, "GET", true),
    /closed the channel mid-response/,
  );
  assert.throws(() => parse("HTTP/1.1 200 OK\r\n" + "X: y\r\n".repeat(50_000), 4096), /head too large/);
});

Deno.test("requestHead: repeated headers become lines; a line break in a value is refused", () => {
  assert.equal(
    requestHead("GET", "/api", { host: "h", "impersonate-group": ["a", "b"], skip: undefined }),
    "GET /api HTTP/1.1\r\nhost: h\r\nimpersonate-group: a\r\nimpersonate-group: b\r\n\r\n",
  );
  assert.throws(() =>
    requestHead("GET", "/", { "impersonate-user": "x\r\nimpersonate-group: system:masters" })
  );
});

Deno.test("exchange: many requests, fixed and chunked bodies both ways, on one kept-alive connection", async () => {
  let connections = 0;
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Uint8Array) => (body += new TextDecoder().decode(c)));
    req.on("end", () => {
      const answer = `${req.method} ${req.url} ${req.headers["content-length"] ?? "-"} ${
        req.headers["transfer-encoding"] ?? "-"
      } ${body}`;
      if (req.url === "/chunked") {
        res.writeHead(200);
        res.write(answer.slice(0, 3));
        setTimeout(() => res.end(answer.slice(3)), 5);
      } else if (req.method === "HEAD") res.writeHead(200, { "content-length": "99" }).end();
      else res.writeHead(201, { "content-length": Buffer.byteLength(answer) }).end(answer);
    });
  });
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
  await new Promise((r) => socket.once("connect", r));
  const send = async (method: string, path: string, headers: http.OutgoingHttpHeaders, body?: string[]) => {
    let status = 0;
    let text = "";
    const r = await exchange(socket, {
      method,
      path,
      headers: { host: "x", ...headers },
      body: body ? Readable.from(body.map((s) => Buffer.from(s))) : undefined,
    }, {
      head: (h) => (status = h.status),
      data: (c) => (text += new TextDecoder().decode(c)),
    }, new AbortController().signal);
    return { status, text, ...r };
  };
  try {
    for (let i = 0; i < 3; i++) {
      const get = await send("GET", `/get/${i}`, {});
      assert.deepEqual([get.status, get.text, get.reusable], [201, `GET /get/${i} - - `, true]);
    }
    const fixed = await send("POST", "/fixed", { "content-length": "10" }, ["01234", "56789"]);
    assert.deepEqual([fixed.text, fixed.bytesIn, fixed.reusable], ["POST /fixed 10 - 0123456789", 10, true]);
    const chunked = await send("PATCH", "/chunked", {}, ["ab", "cde", "f"]);
    assert.deepEqual([chunked.status, chunked.text, chunked.reusable], [
      200,
      "PATCH /chunked - chunked abcdef",
      true,
    ]);
    const head = await send("HEAD", "/head", {});
    assert.deepEqual([head.status, head.text, head.reusable], [200, "", true]);
    assert.equal(connections, 1, "every exchange used the same connection");
  } finally {
    socket.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
