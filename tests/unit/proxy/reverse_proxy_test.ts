/**
 * The proxy on its own (lib/proxy): the conformance matrix from a raw socket through the hub's front door
 * (TLS) and `ReverseProxy` over `DuplexClients` to a real HTTP/1.1 backend, all in this process.
 */

import assert from "node:assert/strict";
import net from "node:net";
import http from "node:http";
import type { Duplex } from "node:stream";
import { DuplexClients, endToEndHeaders, ReverseProxy } from "../../../lib/proxy/mod.ts";
import { startFrontDoor } from "../../../lib/server/front_door.ts";
import { createCa, issueLeaf } from "../../../lib/server/tls_material.ts";
import { statusResponder } from "../../../lib/kube/status.ts";
import { logger } from "../../../lib/log/log.ts";
import { getHead, runConformance, serveConformanceBackend } from "../../helpers/conformance.ts";

const headers: [string, string][] = [["Host", "backend"]];

Deno.test("reverse proxy: the conformance matrix over TLS to a node:http backend", async (t) => {
  const backend = await serveConformanceBackend(0, "127.0.0.1");
  const ca = await createCa("proxy test");
  const leaf = await issueLeaf(ca, {
    commonName: "front",
    ipAddresses: ["127.0.0.1"],
    usage: "server",
    validMs: 86_400_000,
  });
  const door = await startFrontDoor({
    host: "127.0.0.1",
    port: 0,
    tls: leaf,
    ready: () => true,
    log: logger({ component: "test" }),
  });
  const upstream = new DuplexClients<null>({
    dial: () =>
      new Promise((resolve, reject) => {
        const s = net.connect(backend.port, "127.0.0.1");
        s.setNoDelay(true);
        s.once("connect", () => resolve({ duplex: s, carrier: null }));
        s.once("error", reject);
      }),
  });
  const proxy = new ReverseProxy(statusResponder("backend: "));
  const target = (req: http.IncomingMessage) => ({
    upstream,
    path: req.url ?? "/",
    headers: endToEndHeaders(req.rawHeaders),
  });
  door.route((req, res) => {
    void proxy.request(req, res, target(req));
    return true;
  });
  door.upgrade((req, socket: Duplex, head) => {
    void proxy.upgrade(req, socket, head, target(req));
    return true;
  });
  try {
    await runConformance(t, { host: "127.0.0.1", port: door.port, ca: ca.cert }, {
      name: "proxy",
      headers,
      probe: "/probe",
      sink: "/echo",
      body: (size) => "b".repeat(size),
      accepted: (r, bytes) => {
        if (r.status !== 200 || JSON.parse(r.body.toString()).bytes !== bytes) {
          throw new Error(`expected 200 with ${bytes} bytes echoed, got ${r.status} ${r.body}`);
        }
      },
      early: { path: "/early", status: 401 },
      bodiless: [204, 304].map((status) => ({
        name: `${status} answer`,
        status,
        request: async (c) => {
          await c.write(getHead(headers, status === 204 ? "/nocontent" : "/notmodified"));
          return await c.response("GET");
        },
      })),
      trailers: "/trailers",
      upgrade: "/upgrade",
      slowStream: async (c, bytes) => {
        await c.write(getHead(headers, `/stream?bytes=${bytes}`));
        return bytes;
      },
    });
  } finally {
    upstream.close();
    await door.close();
    await backend.close();
  }
});

Deno.test("reverse proxy: an upstream that cannot be dialled is answered by the responder, with its status", async () => {
  class Unavailable extends Error {}
  const upstream = new DuplexClients<null>({ dial: () => Promise.reject(new Unavailable("no way through")) });
  const proxy = new ReverseProxy({
    error: (res, code, message, cause) => {
      const status = cause instanceof Unavailable ? 503 : code;
      res.writeHead(status, { "content-type": "text/plain" }).end(message);
      return status;
    },
    socketError: (socket, code) => {
      socket.destroy();
      return code;
    },
  });
  const outcomes: number[] = [];
  const server = http.createServer((req, res) => {
    void proxy.request(req, res, { upstream, path: "/x", headers: {} }).then((o) => outcomes.push(o.status));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/x`);
    assert.equal(res.status, 503);
    assert.equal(await res.text(), "no way through");
    assert.deepEqual(outcomes, [503]);
  } finally {
    upstream.close();
    await new Promise((r) => server.close(r));
  }
});
