/** The status route: pages by who asks, and live viewers bounded at 32. */

import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { eventsPath, maxViewers, statusRoute } from "../../../lib/server/status_route.ts";
import type { AdminCheck } from "../../../lib/server/admin_api.ts";
import { logger } from "../../../lib/log/log.ts";

async function withRoute(fn: (port: number) => Promise<void>): Promise<void> {
  const route = statusRoute({
    check: (req): Promise<AdminCheck> =>
      Promise.resolve(
        req.headers.authorization === "Bearer admin"
          ? { ok: true, who: { user: "ops", groups: ["admins"], via: "token" } }
          : req.headers.authorization
          ? { ok: false, code: 403, message: "not an admin" }
          : { ok: false, code: 401, message: "no credentials" },
      ),
    view: () =>
      Promise.resolve({
        at: new Date(),
        clusters: {
          replicas: [{
            name: "r0",
            version: "0.1.0",
            takenAt: "",
            requests: { draining: false, ordinary: 0, longRunning: 0 },
          }],
          unreachable: [],
          clusters: [],
        },
        rates: {},
        lbPorts: [],
        refusals: [],
      }),
    log: logger({ component: "test" }),
  });
  const server = http.createServer((req, res) => {
    if (!route.route(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  try {
    await fn((server.address() as AddressInfo).port);
  } finally {
    route.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** Opens an event stream; resolves with its status and, for 200, the response after the first event. */
function openStream(port: number): Promise<{ status: number; res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    http.get(
      { port, host: "127.0.0.1", path: eventsPath, headers: { authorization: "Bearer admin" } },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return resolve({ status: res.statusCode ?? 0, res });
        }
        let seen = "";
        res.on("data", (c: Uint8Array) => {
          seen += new TextDecoder().decode(c);
          if (seen.includes("event: status")) resolve({ status: 200, res });
        });
      },
    ).on("error", reject);
  });
}

Deno.test("status route: 401 with a sign-in hint, 403 for a non-admin, the page for an admin", async () => {
  await withRoute(async (port) => {
    const get = (auth?: string) =>
      fetch(`http://127.0.0.1:${port}/`, { headers: auth ? { authorization: auth } : {} }).then(async (
        r,
      ) => ({
        status: r.status,
        type: r.headers.get("content-type"),
        text: await r.text(),
      }));
    const anon = await get();
    assert.equal(anon.status, 401);
    assert.match(anon.text, /Sign in to Tower/);
    const dev = await get("Bearer dev");
    assert.equal(dev.status, 403);
    assert.match(dev.text, /Not an administrator/);
    const admin = await get("Bearer admin");
    assert.equal(admin.status, 200);
    assert.equal(admin.type, "text/html; charset=utf-8");
    assert.match(admin.text, /Signed in as ops/);
    const js = await fetch(`http://127.0.0.1:${port}/_tower/status.js`);
    assert.match(await js.text(), /new EventSource\("\/api\/tower\/v1\/events"\)/);
  });
});

Deno.test("status route: 32 live viewers are served, the 33rd gets 503, a freed place is taken again", async () => {
  await withRoute(async (port) => {
    const open = [];
    for (let i = 0; i < maxViewers; i++) open.push(await openStream(port));
    assert.ok(open.every((o) => o.status === 200));
    const extra = await openStream(port);
    assert.equal(extra.status, 503);
    open.pop()!.res.destroy();
    // The server notices the close asynchronously; the place is free once it has.
    let again = await openStream(port);
    for (let i = 0; i < 20 && again.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      again = await openStream(port);
    }
    assert.equal(again.status, 200);
    for (const o of [...open, again]) o.res.destroy();
  });
});
