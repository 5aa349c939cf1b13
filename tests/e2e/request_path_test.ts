/**
 * The request path under write patterns real clients use: client-go writes a body above ~4 KiB in its
 * own write, after the head. Such a request must not wedge anything a later request needs.
 */

import assert from "node:assert/strict";
import { startTowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { RawConnection, requestHead } from "../helpers/raw_http.ts";

Deno.test("a body sent apart from its head leaves the path open for the next requests", async () => {
  const env = await startTowerEnv({ clusters: ["split"] });
  try {
    const token = await env.addTokenUser("raw", ["system:masters"], ["*"]);
    const target = {
      host: "127.0.0.1",
      port: env.hub.port,
      ca: await Deno.readTextFile(env.added.get("split")!.caFile),
    };
    const auth: [string, string] = ["Authorization", `Bearer ${token}`];
    const get = async (conn?: RawConnection) => {
      const c = conn ?? await RawConnection.open(target);
      try {
        await c.write(requestHead("GET", "/clusters/split/version", [["Host", "hub"], auth]));
        return await c.response("GET", 1000);
      } finally {
        if (!conn) c.close();
      }
    };
    await eventually(10_000, async () => assert.equal((await get()).status, 200));

    // Several at once, so the agent needs new connections to the API server for some of them.
    const post = async (name: string) => {
      const body = JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name },
        data: { k: "v" },
      });
      const c = await RawConnection.open(target);
      await c.write(requestHead("POST", "/clusters/split/api/v1/namespaces/default/configmaps", [
        ["Host", "hub"],
        auth,
        ["Content-Type", "application/json"],
        ["Content-Length", String(body.length)],
      ]));
      await new Promise((r) => setTimeout(r, 50)); // the head goes out in its own segment
      await c.write(body);
      const r = await c.response("POST", 10_000);
      assert.equal(r.status, 201, `create ${name}: ${r.body}`);
      return c;
    };
    for (let round = 0; round < 3; round++) {
      const conns = await Promise.all([0, 1, 2, 3].map((i) => post(`split-${round}-${i}`)));
      try {
        // The same connections and new ones both answer at once.
        for (const c of conns) assert.equal((await get(c)).status, 200, "GET on the POST's connection");
        for (let i = 0; i < 4; i++) assert.equal((await get()).status, 200, "GET on a new connection");
      } finally {
        for (const c of conns) c.close();
      }
    }
  } finally {
    await env.stop();
  }
});
