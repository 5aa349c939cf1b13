/**
 * Streams through the hub: a watch delivers each event as the API server writes it (no buffering until
 * the response ends), and a client that goes away takes its upstream request and channel with it.
 */

import assert from "node:assert/strict";
import https from "node:https";
import { Buffer } from "node:buffer";
import YAML from "yaml";
import { startTowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { type HubStatus, openChannels, waitForHubStatus } from "../helpers/hub_status.ts";

interface Kubeconfig {
  clusters: { cluster: Record<string, string> }[];
  users: { user: Record<string, string> }[];
}

/** Waits until `check` holds, failing with `what` after `ms`. */
function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  return eventually(ms, async () => {
    if (!(await check())) throw new Error(`not within ${ms} ms: ${what}`);
  });
}

Deno.test("a watch streams event by event through the hub; closing the client closes the upstream", async () => {
  // Audit to a file this time (the other e2e tests read it from stdout).
  const auditFile = `/tmp/tower/audit-${crypto.randomUUID()}.log`;
  const env = await startTowerEnv({ clusters: ["stream"], hubArgs: ["--audit-log", auditFile] });
  try {
    const cluster = env.clusters.get("stream")!;
    const kc = YAML.parse(
      await Deno.readTextFile(await env.addUser("w", ["system:masters"], ["*"])),
    ) as Kubeconfig;
    const b64 = (v: string | undefined) => Buffer.from(v ?? "", "base64").toString();
    const tls = {
      ca: b64(kc.clusters[0]?.cluster["certificate-authority-data"]),
      cert: b64(kc.users[0]?.user["client-certificate-data"]),
      key: b64(kc.users[0]?.user["client-key-data"]),
    };
    // The hub applies new users within a moment; wait until it admits this one.
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        https.get({ host: "127.0.0.1", port: env.hub.port, path, ...tls }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        }).on("error", reject);
      });
    await until(
      "the hub admits the new user",
      async () => (await get("/clusters/stream/version")) === 200,
    );

    const events: { type: string; name: string; at: number }[] = [];
    let buffered = "";
    const req = https.get({
      host: "127.0.0.1",
      port: env.hub.port,
      path: "/clusters/stream/api/v1/namespaces/default/configmaps?watch=true",
      ...tls,
    });
    const response = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => {
      req.once("response", resolve);
      req.once("error", reject);
    });
    assert.equal(response.statusCode, 200);
    response.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        events.push({ type: ev.type, name: ev.object?.metadata?.name, at: Date.now() });
      }
    });

    // Each change shows up while the response is still open, before the next change is made.
    for (const [i, verb] of ["create", "delete"].entries()) {
      const args = verb === "create"
        ? ["create", "configmap", "live", "--from-literal=a=b"]
        : ["delete", "configmap", "live"];
      const r = await cluster.kubectl(args);
      assert.equal(r.code, 0, r.stderr);
      await until(
        `event ${i + 1} arrives on the open watch`,
        () => Promise.resolve(events.length > i),
        5000,
      );
    }
    assert.deepEqual(events.map((e) => `${e.type} ${e.name}`), ["ADDED live", "DELETED live"]);

    // The client goes away: the hub ends the upstream request, and its channel closes. Channels kept
    // ready by the hub and kept-alive idle ones count too (the watch may have taken one of those): take
    // the number once two status writes in a row agree on it (a refill still under way is a change).
    let previous: HubStatus | undefined;
    const during = await waitForHubStatus(env.dataDir, "the channel count settles", (status) => {
      const [p, n] = [previous, openChannels(status, "stream")];
      previous = status;
      const settled = p !== undefined && p.updatedAt !== status.updatedAt && openChannels(p, "stream") === n;
      return settled && n > 0 ? n : undefined;
    }, 15_000);
    req.destroy();
    await waitForHubStatus(
      env.dataDir,
      "the watch's channel is closed",
      (s) => openChannels(s, "stream") < during || undefined,
    );
    await until("the watch is audited as closed by the client", async () => {
      const lines = (await Deno.readTextFile(auditFile)).trim().split("\n").map((l) => JSON.parse(l));
      return lines.some((l) => l.verb === "watch" && l.error === "client closed the connection");
    });
    const audit = await Deno.readTextFile(auditFile);
    assert.ok(!/BEGIN|PRIVATE|Bearer|tower_/.test(audit), "no credential in the audit file");
    assert.equal((await Deno.stat(auditFile)).mode! & 0o777, 0o600);
  } finally {
    await env.stop();
    await Deno.remove(auditFile).catch(() => {});
  }
});
