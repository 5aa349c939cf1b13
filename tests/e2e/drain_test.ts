/**
 * SIGTERM drains a hub (here the single hub of the file registry): it turns not-ready and takes no new
 * agent tunnel at once, keeps serving, lets a request in flight finish, ends a watch with a clean end of
 * its stream, and exits 0.
 */

import assert from "node:assert/strict";
import https from "node:https";
import type http from "node:http";
import { Buffer } from "node:buffer";
import YAML from "yaml";
import { startTowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";

interface Kubeconfig {
  clusters: { cluster: Record<string, string> }[];
  users: { user: Record<string, string> }[];
}

Deno.test("SIGTERM: not ready, no new tunnels, the request in flight finishes, a watch ends cleanly, exit 0", async () => {
  const env = await startTowerEnv({ clusters: ["drain"], hubArgs: ["--drain-timeout", "20s"] });
  try {
    const kc = YAML.parse(
      await Deno.readTextFile(await env.addUser("ops", ["system:masters"], ["*"])),
    ) as Kubeconfig;
    const b64 = (v: string | undefined) => Buffer.from(v ?? "", "base64").toString();
    const tls = {
      host: "127.0.0.1",
      port: env.hub.port,
      ca: b64(kc.clusters[0]?.cluster["certificate-authority-data"]),
      cert: b64(kc.users[0]?.user["client-certificate-data"]),
      key: b64(kc.users[0]?.user["client-key-data"]),
      agent: false as const,
    };
    const get = (path: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
        const req = https.request({ ...tls, path, headers }, (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
        });
        req.on("upgrade", (res, socket) => {
          socket.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers });
        });
        req.on("error", reject);
        req.end();
      });
    await eventually(10_000, async () => assert.equal((await get("/clusters/drain/version")).status, 200));

    // A watch: long-running, ended by the drain with the end of its chunked stream.
    let watchEnded: "end" | "aborted" | "error" | undefined;
    let watchStarted: () => void = () => {};
    const watchAnswered = new Promise<void>((r) => (watchStarted = r));
    const watchDone = new Promise<void>((resolve) => {
      https.get({ ...tls, path: "/clusters/drain/api/v1/namespaces/default/configmaps?watch=1" }, (res) => {
        assert.equal(res.statusCode, 200);
        watchStarted();
        res.resume();
        res.on("end", () => {
          watchEnded ??= res.complete ? "end" : "aborted";
          resolve();
        });
        res.on("aborted", () => {
          watchEnded ??= "aborted";
          resolve();
        });
        res.on("error", () => {
          watchEnded ??= "error";
          resolve();
        });
      });
    });

    // An ordinary request in flight: its body arrives in two halves, the second after SIGTERM.
    const body = JSON.stringify({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "written-while-draining" },
      data: { x: "y".repeat(2000) },
    });
    const half = Math.floor(body.length / 2);
    const post = https.request({
      ...tls,
      method: "POST",
      path: "/clusters/drain/api/v1/namespaces/default/configmaps",
      headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) },
    });
    const posted = new Promise<{ status: number; text: string }>((resolve, reject) => {
      post.on("response", (res) => {
        let text = "";
        res.on("data", (c: Uint8Array) => (text += new TextDecoder().decode(c)));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      });
      post.on("error", reject);
    });
    // The head and half the body are on the wire once the write's callback runs; a request on another
    // connection, answered after that, shows the hub has read them (its TLS handshake alone takes turns).
    await new Promise<void>((resolve) => post.write(body.slice(0, half), () => resolve()));
    await watchAnswered;
    assert.equal((await get("/clusters/drain/version")).status, 200);

    const from = env.hub.lines.length;
    env.hub.signal("SIGTERM");
    const draining = await env.hub.waitForMsg("hub draining", 5000, from);
    assert.equal(draining.others, false, "a lone hub has nowhere to send its agents");
    assert.equal(draining.ordinaryInFlight, 1);
    assert.equal(draining.longRunningInFlight, 1);

    assert.equal((await get("/readyz")).status, 503);
    const tunnel = await get("/tunnel", {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-protocol": "tower-tunnel.v1",
    });
    assert.equal(tunnel.status, 503, "a draining hub takes no new tunnel");
    // Still serving; the answer asks the client to take its next request elsewhere.
    const during = await get("/clusters/drain/api/v1/namespaces/default/configmaps");
    assert.equal(during.status, 200);
    assert.equal(during.headers.connection, "close");
    assert.equal(watchEnded, undefined, "the watch was cut before the ordinary request finished");

    post.end(body.slice(half));
    const created = await posted;
    assert.equal(created.status, 201, created.text);
    await watchDone;
    assert.equal(watchEnded, "end", "the watch did not end cleanly");

    const status = await env.hub.exited;
    assert.equal(status.code, 0, env.hub.dump());
    const drained = await env.hub.waitForMsg("hub drained", 1000, from);
    assert.equal(drained.timedOut, false);
    assert.equal(drained.ordinaryLeft, 0);
    assert.equal(drained.longRunningEnded, 1);
  } finally {
    await env.stop();
  }
});
