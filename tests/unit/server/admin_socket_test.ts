/** Admin sockets: found per replica, stale ones skipped, answers bounded in size. */

import assert from "node:assert/strict";
import http from "node:http";
import {
  adminSocketPath,
  askAdminSocket,
  askAnyReplica,
  startAdminSocket,
} from "../../../lib/server/admin_socket.ts";
import { logger } from "../../../lib/log/log.ts";

const log = logger({ component: "test" });

Deno.test("askAnyReplica: no dir or only stale sockets mean no hub; a live replica answers", async () => {
  await Deno.mkdir("/tmp/tower", { recursive: true });
  const dir = await Deno.makeTempDir({ dir: "/tmp/tower", prefix: "sockets-" });
  try {
    assert.equal(await askAnyReplica(`${dir}/missing`, "/api/tower/v1/clusters"), undefined);
    // A replica that died left its socket file behind.
    const stale = await startAdminSocket(adminSocketPath(dir, "a-dead"), () => {}, log);
    const path = adminSocketPath(dir, "a-dead");
    await stale!.close();
    const listener = Deno.listen({ transport: "unix", path });
    listener.close(); // the file stays; nobody accepts on it
    assert.equal(await askAnyReplica(dir, "/api/tower/v1/clusters"), undefined);
    const live = await startAdminSocket(adminSocketPath(dir, "b-live"), (req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ path: req.url }));
    }, log);
    assert.equal((await Deno.stat(adminSocketPath(dir, "b-live"))).mode! & 0o777, 0o600);
    assert.deepEqual(await askAnyReplica(dir, "/api/tower/v1/clusters"), { path: "/api/tower/v1/clusters" });
    await live!.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("askAdminSocket: an answer past 16 MiB is refused; exactly 16 MiB is read", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp/tower", prefix: "sockets-" });
  const limit = 16 << 20;
  const body = (n: number) => `"${"x".repeat(n - 2)}"`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(body(req.url === "/big" ? limit + 1 : limit));
  });
  const path = `${dir}/s.sock`;
  await new Promise<void>((r) => server.listen(path, () => r()));
  try {
    assert.equal((await askAdminSocket(path, "/exact") as string).length, limit - 2);
    await assert.rejects(askAdminSocket(path, "/big"), /larger than/);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await Deno.remove(dir, { recursive: true });
  }
});
