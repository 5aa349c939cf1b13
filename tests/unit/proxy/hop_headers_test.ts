/** Hop-by-hop header handling shared by the plain and upgrade paths (lib/proxy/hop_headers.ts). */

import assert from "node:assert/strict";
import { endToEndHeaders, headerRecord, isUpgrade, rawResponseHead } from "../../../lib/proxy/mod.ts";

Deno.test("endToEndHeaders drops hop-by-hop headers and those named in Connection", () => {
  const table: { raw: string[]; want: Record<string, string | string[]> }[] = [
    { raw: [], want: {} },
    {
      raw: [
        "Connection",
        "keep-alive",
        "Keep-Alive",
        "timeout=5",
        "Transfer-Encoding",
        "chunked",
        "TE",
        "trailers",
        "Trailer",
        "X-T",
        "Upgrade",
        "websocket",
        "Proxy-Authorization",
        "Basic x",
        "Proxy-Connection",
        "keep-alive",
        "Expect",
        "100-continue",
        "Content-Length",
        "5",
      ],
      want: { "content-length": "5" },
    },
    {
      raw: ["Connection", "close, X-Hop ,x-other", "X-Hop", "1", "X-OTHER", "2", "X-Keep", "3"],
      want: { "x-keep": "3" },
    },
    { raw: ["A", "1", "a", "2", "A", "3"], want: { a: ["1", "2", "3"] } },
    { raw: ["Sec-WebSocket-Key", "k=="], want: { "sec-websocket-key": "k==" } },
  ];
  for (const { raw, want } of table) assert.deepEqual(endToEndHeaders(raw), want, raw.join(","));
});

Deno.test("isUpgrade needs both Upgrade and a Connection token 'upgrade'", () => {
  const table: [Record<string, string>, boolean][] = [
    [{ upgrade: "websocket", connection: "Upgrade" }, true],
    [{ upgrade: "SPDY/3.1", connection: "keep-alive, upgrade" }, true],
    [{ upgrade: "websocket" }, false],
    [{ connection: "upgrade" }, false],
    [{ upgrade: "websocket", connection: "upgrades" }, false],
  ];
  for (const [headers, want] of table) assert.equal(isUpgrade({ headers }), want, JSON.stringify(headers));
});

Deno.test("rawResponseHead relays a 101 exactly and closes after any other answer", () => {
  const raw = [
    "Upgrade",
    "SPDY/3.1",
    "Connection",
    "Upgrade",
    "X-Stream-Protocol-Version",
    "v4.channel.k8s.io",
  ];
  assert.equal(
    rawResponseHead(101, "Switching Protocols", raw),
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n" +
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
  );
  assert.equal(
    rawResponseHead(403, "Forbidden", [
      "Content-Type",
      "application/json",
      "Content-Length",
      "10",
      "Connection",
      "keep-alive",
    ]),
    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
  );
});

Deno.test("headerRecord turns numbers to strings and drops undefined", () => {
  assert.deepEqual(headerRecord({ "content-length": 5, a: ["1", "2"], b: undefined, c: "x" }), {
    "content-length": "5",
    a: ["1", "2"],
    c: "x",
  });
});
