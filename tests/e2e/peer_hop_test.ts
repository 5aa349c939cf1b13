/**
 * Kubernetes API requests through a peer hop: two hub replicas share a data dir, the cluster's agent
 * holds tunnels to replica A only, and kubectl talks to replica B. B authenticates, authorizes and audits
 * the request, then carries it over the peer link to A and down A's tunnel. Its audit line names A as
 * the relay. With the agent gone, B answers 503 naming every replica, and nothing hangs.
 */

import assert from "node:assert/strict";
import { auditLines, startTowerEnv } from "./tower_env.ts";
import { auditOf, type HubProcess, replicaOf, startSecondReplica } from "../helpers/tower_procs.ts";

Deno.test("kube API requests on a replica without the agent are carried through the replica that holds it", async () => {
  const env = await startTowerEnv({ clusters: ["hop"], hubArgs: ["--peer-listen", "127.0.0.1:0"] });
  let b: HubProcess | undefined;
  try {
    b = await startSecondReplica(env.dataDir);
    const viaA = await env.addUser("ops", ["system:masters"], ["*"]);
    // The same kubeconfig, pointed at replica B (both present the same serving certificate).
    const viaB = `${viaA}.b`;
    await Deno.writeTextFile(
      viaB,
      (await Deno.readTextFile(viaA)).replaceAll(`127.0.0.1:${env.hub.port}/`, `127.0.0.1:${b.port}/`),
    );
    const kubectl = (args: string[], stdin?: string) =>
      env.kubectl(viaB, ["--context", "hop", ...args], { ...(stdin ? { stdin } : {}), timeoutMs: 30_000 });

    const ns = await kubectl(["get", "namespaces", "-o", "name"]);
    assert.equal(ns.code, 0, ns.stderr);
    assert.match(ns.stdout, /namespace\/default/);

    // A body larger than client-go writes with its head (the hang of issue 16), then a plain GET.
    const big = "x".repeat(8600);
    const created = await kubectl(
      ["create", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "hop-big", namespace: "default" },
        data: { big },
      }),
    );
    assert.equal(created.code, 0, created.stderr);
    const version = await kubectl(["get", "--raw", "/version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /gitVersion/);

    // A watch through the hop sees an object created after it started.
    const watch = env.spawnKubectl(viaB, [
      "--context",
      "hop",
      "get",
      "configmaps",
      "-n",
      "default",
      "--watch-only",
      "-o",
      "name",
      "--request-timeout",
      "20s",
    ]);
    let out = "";
    const seen = (async () => {
      for await (const chunk of watch.stdout.pipeThrough(new TextDecoderStream())) {
        out += chunk;
        if (out.includes("configmap/hop-late-")) return true;
      }
      return false;
    })();
    // The watch may not be established yet when the first one is created: create one every 500 ms until
    // it reports one (at most 30).
    let watched = false;
    seen.then((v) => watched = v);
    for (let i = 0; i < 30 && !watched; i++) {
      const r = await kubectl(["create", "configmap", `hop-late-${i}`, "-n", "default"]);
      assert.equal(r.code, 0, r.stderr);
      await Promise.race([seen, new Promise((ok) => setTimeout(ok, 500))]);
    }
    try {
      watch.kill();
    } catch { /* already gone */ }
    await watch.status;
    assert.ok(watched, `the watch through the peer hop reported no new configmap: ${out}`);

    // B audited them, naming A as the relay; A logged the relayed channels.
    const a = replicaOf(env.hub);
    const lines = auditOf(b).filter((l) => l.cluster === "hop" && l.user === "ops");
    assert.ok(lines.length >= 4, JSON.stringify(lines));
    for (const l of lines) {
      assert.equal(l.via, a, JSON.stringify(l));
      assert.equal(l.agent, undefined, JSON.stringify(l));
    }
    assert.ok(
      lines.some((l) =>
        l.method === "POST" && l.status === 201 && l.path === "/api/v1/namespaces/default/configmaps"
      ),
    );
    assert.ok(
      !auditLines(env).some((l) => l.user === "ops"),
      "A only relays: the request is audited once, where it landed",
    );
    await env.hub.waitFor((l) => l.msg === "peer channel relayed" && l.peer === replicaOf(b!), "A relays");

    // The agent goes (with every tunnel it held to A): B then says no replica holds one.
    await env.agents.get("hop")!.stop();
    await env.hub.waitForMsg("agent disconnected");
    let gone = { code: 0, stdout: "", stderr: "" };
    for (let i = 0; i < 20; i++) {
      gone = await kubectl(["get", "--raw", "/api/v1/namespaces/default"]);
      if (/no connected agent on any hub replica|no replica could open/.test(gone.stderr)) break;
      // A second tunnel of the agent may still be closing on A.
      await new Promise((ok) => setTimeout(ok, 250));
    }
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /no connected agent on any hub replica|no replica could open/);
    const refused = auditOf(b).filter((l) => l.cluster === "hop" && l.status === 503);
    assert.ok(refused.length >= 1, "the refusal is audited on B");
  } finally {
    await b?.stop();
    await env.stop();
  }
});
