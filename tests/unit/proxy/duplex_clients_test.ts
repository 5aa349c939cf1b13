/**
 * DuplexClients' reuse rules, against a real HTTP/1.1 server over TCP: a client whose carrier is no longer
 * usable is closed when its request ends (not kept idle), and a `fresh` lease never takes an idle client.
 */

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { DuplexClients, type Lease } from "../../../lib/proxy/mod.ts";

/** A keep-alive HTTP server on loopback; `connections` counts TCP connections it accepted. */
async function backend() {
  let connections = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-length": "2" });
    res.end("ok");
  });
  server.on("connection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    connections: () => connections,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** One GET on the lease's client; resolves when the response ended. */
function get(lease: Lease<string>): Promise<void> {
  return new Promise((resolve, reject) => {
    lease.client.dispatch({ method: "GET", path: "/", headers: { host: "b" } }, {
      onConnect: () => {},
      onHeaders: () => true,
      onData: () => true,
      onComplete: () => resolve(),
      onError: reject,
    });
  });
}

Deno.test("DuplexClients: an unusable carrier is closed when its request ends; fresh leases skip idle clients", async () => {
  const b = await backend();
  let carrier = 0;
  const refused = new Set<string>();
  const clients = new DuplexClients<string>({
    dial: () =>
      new Promise((resolve, reject) => {
        const s = net.connect(b.port, "127.0.0.1");
        s.once("connect", () => resolve({ duplex: s, carrier: `c${++carrier}` }));
        s.once("error", reject);
      }),
    usable: (c) => !refused.has(c),
  });
  try {
    // Kept alive: the second request reuses the first connection.
    let lease = clients.acquire();
    await get(lease);
    lease.release(true);
    assert.equal(clients.idle, 1);
    lease = clients.acquire();
    assert.equal(lease.reused, true);
    await get(lease);
    assert.equal(lease.carrier(), "c1");
    lease.release(true);
    assert.equal(b.connections(), 1);

    // A fresh lease dials a connection of its own although one is idle.
    const fresh = clients.acquire(true);
    assert.equal(fresh.reused, false);
    await get(fresh);
    assert.equal(fresh.carrier(), "c2");
    assert.equal(b.connections(), 2);
    assert.equal(clients.idle, 1);

    // Its carrier became unusable while it carried the request: it is not kept, though reusable.
    refused.add("c2");
    fresh.release(true);
    assert.equal(clients.idle, 1);
    lease = clients.acquire();
    assert.equal(lease.carrier(), "c1");
    lease.release(true);
  } finally {
    clients.close();
    b.close();
  }
});
