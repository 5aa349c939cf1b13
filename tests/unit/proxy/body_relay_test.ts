/**
 * BodyRelay (lib/proxy/reverse_proxy.ts) writes an upstream body into a real `node:http` response: an empty
 * piece (undici hands one over when it resumes a paused response) never becomes a zero-length write, which
 * breaks Deno's TLS sockets.
 */

import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";
import { BodyRelay } from "../../../lib/proxy/reverse_proxy.ts";

Deno.test("BodyRelay drops empty pieces and sends the rest", async () => {
  const writes: number[] = [];
  const server = http.createServer((_req, res) => {
    const write = res.write.bind(res) as (c: Uint8Array) => boolean;
    res.write = ((c: Uint8Array) => {
      writes.push(c.length);
      return write(c);
    }) as typeof res.write;
    res.writeHead(200, { "content-type": "text/plain" });
    const relay = new BodyRelay(res, NaN, () => {});
    relay.data(Buffer.from("abc"));
    // An empty piece alone in its event-loop turn, as undici delivers it on resuming.
    setImmediate(() => {
      assert.equal(relay.data(new Uint8Array(0)), true);
      setTimeout(() => {
        relay.data(Buffer.from("def"));
        relay.end();
      }, 10);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    assert.equal(await res.text(), "abcdef");
    assert.deepEqual(writes, [3, 3]);
  } finally {
    await new Promise((r) => server.close(r));
  }
});
