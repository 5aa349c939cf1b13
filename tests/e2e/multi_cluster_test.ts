/**
 * Several clusters and several agents behind one hub, end to end: real kubectl and
 * `@kubernetes/client-node` in the root network namespace, two real clusters (`east`, `west`) in their own
 * namespaces, reachable only through their agents — which get killed and replaced along the way.
 */

import assert from "node:assert/strict";
import https from "node:https";
import YAML from "yaml";
import * as k8s from "@kubernetes/client-node";
import { auditLines, startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { hubRequest } from "./_service_helpers.ts";
import type { TowerProcess } from "../helpers/tower_procs.ts";

const clusters = ["east", "west"] as const;

/** GET through the hub with a client certificate; resolves with status and parsed JSON body. */
async function getJson(
  port: number,
  path: string,
  tls: { ca: string; cert: string; key: string },
): Promise<{ status: number; json: Record<string, unknown> }> {
  const { status, body } = await hubRequest(port, path, tls, { accept: "application/json" });
  try {
    return { status, json: JSON.parse(body) };
  } catch (e) {
    throw new Error(`${path}: ${status} ${body}: ${e}`);
  }
}

/** Collects a child's output stream as text, so a test can wait for a pattern in it. */
class OutputText {
  text = "";
  readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this.text += chunk;
    })();
  }
  /** Waits until the text matches `re`, for at most `ms`. */
  async waitFor(re: RegExp, ms: number): Promise<void> {
    await eventually(ms, () => assert.match(this.text, re));
  }
}

/** Resolves with the child's status, or undefined if it is still running after `ms`. */
async function exitWithin(child: Deno.ChildProcess, ms: number): Promise<Deno.CommandStatus | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  try {
    return await Promise.race([child.status, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A watch held open in this process: `events` collects the raw body; `ended` says how the response
 * stopped — "end" for a complete chunked body, "aborted: …" for a truncated one.
 */
function rawWatch(
  port: number,
  path: string,
  tls: { ca: string; cert: string; key: string },
): { body: () => string; ended: Promise<string>; close: () => void } {
  let body = "";
  let req: ReturnType<typeof https.get> | undefined;
  const ended = new Promise<string>((resolve) => {
    req = https.get({ host: "127.0.0.1", port, path, ...tls, agent: false }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (c: string) => body += c);
      res.on("end", () => resolve("end"));
      res.on("error", (e: Error) => resolve(`aborted: ${e.message}`));
    });
    req.on("error", (e: Error) => resolve(`request error: ${e.message}`));
  });
  return { body: () => body, ended, close: () => req?.destroy() };
}

/** The hub's ids of `cluster`'s agents, in the order they connected. */
function agentIds(env: TowerEnv, cluster: string): string[] {
  return env.hub.lines.filter((l) => l.msg === "agent connected" && l.cluster === cluster).map((l) =>
    String(l.agent)
  );
}

Deno.test("multi-cluster: two clusters at once, agents killed and replaced, client-node", async (t) => {
  const env = await startTowerEnv({ clusters: [...clusters] });
  const extraAgents: TowerProcess[] = [];
  try {
    const port = env.hub.port;
    const ca = await Deno.readTextFile(env.added.get("east")!.caFile);
    for (const name of clusters) {
      const c = env.clusters.get(name)!;
      for (
        const args of [
          ["create", "configmap", "identity", `--from-literal=cluster=${name}`],
          ["create", "configmap", `only-${name}`],
          ["create", "role", "cm-read", "--verb=get,list,watch", "--resource=configmaps"],
          ["create", "rolebinding", "mc-cm", "--role=cm-read", "--user=mc"],
        ]
      ) {
        const r = await c.kubectl(args);
        assert.equal(r.code, 0, `${name}: kubectl ${args.join(" ")}: ${r.stderr}`);
      }
    }
    const kubeconfig = await env.addUser("mc", [], ["*"]);
    const kc = YAML.parse(await Deno.readTextFile(kubeconfig));
    const tls = {
      ca,
      cert: atob(kc.users[0].user["client-certificate-data"]),
      key: atob(kc.users[0].user["client-key-data"]),
    };
    const identityPath = (c: string) => `/clusters/${c}/api/v1/namespaces/default/configmaps/identity`;
    // The running hub applies `user add` / `access allow` when it sees the registry file change.
    await eventually(10_000, async () => {
      for (const c of clusters) assert.equal((await getJson(port, identityPath(c), tls)).status, 200);
    });
    const kubectl = (args: string[]) => env.kubectl(kubeconfig, args, { timeoutMs: 30_000 });
    // Steps that start or kill processes, or use client-node's pooled sockets, leave resources that only
    // the env's stop() (checked by the test's own sanitizers) cleans up.
    const looseStep = (name: string, fn: () => Promise<void>) =>
      t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });

    await t.step("each context sees only its own cluster", async () => {
      for (const [name, other] of [["east", "west"], ["west", "east"]] as const) {
        let r = await kubectl([
          `--context=${name}`,
          "get",
          "cm",
          "identity",
          "-o",
          "jsonpath={.data.cluster}",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, name);
        r = await kubectl([`--context=${name}`, "get", "cm", "-o", "name"]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^configmap/only-${name}$`, "m"));
        assert.doesNotMatch(r.stdout, new RegExp(`only-${other}`));
        r = await kubectl([`--context=${name}`, "get", "cm", `only-${other}`]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /NotFound/);
      }
    });

    await t.step("concurrent requests to both clusters all land right", async () => {
      const want = Array.from({ length: 50 }, (_, i) => clusters[i % 2]!);
      const got = await Promise.all(want.map((c) => getJson(port, identityPath(c), tls)));
      got.forEach((r, i) => {
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.equal((r.json.data as Record<string, string>).cluster, want[i]);
      });
      const viaKubectl = await Promise.all(
        want.slice(0, 10).map((c) =>
          kubectl([`--context=${c}`, "get", "cm", "identity", "-o", "jsonpath={.data.cluster}"])
        ),
      );
      viaKubectl.forEach((r, i) => {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, want[i]);
      });
    });

    await looseStep("@kubernetes/client-node lists and watches through the hub", async () => {
      const config = new k8s.KubeConfig();
      config.loadFromFile(kubeconfig);
      for (const name of clusters) {
        config.setCurrentContext(name);
        const list = await config.makeApiClient(k8s.CoreV1Api).listNamespacedConfigMap({
          namespace: "default",
        });
        const names = list.items.map((cm) => cm.metadata?.name);
        assert.ok(names.includes(`only-${name}`), JSON.stringify(names));
        assert.ok(!names.includes(`only-${name === "east" ? "west" : "east"}`));
        assert.equal(list.items.find((cm) => cm.metadata?.name === "identity")?.data?.cluster, name);
      }

      config.setCurrentContext("west");
      const list = await config.makeApiClient(k8s.CoreV1Api).listNamespacedConfigMap({
        namespace: "default",
      });
      const events: { phase: string; name: string; cluster: string | undefined }[] = [];
      let ended: unknown = "not yet";
      const controller = await new k8s.Watch(config).watch(
        "/api/v1/namespaces/default/configmaps",
        { resourceVersion: list.metadata?.resourceVersion },
        (phase, obj) => events.push({ phase, name: obj?.metadata?.name, cluster: obj?.data?.cluster }),
        (err) => ended = err,
      );
      try {
        const west = env.clusters.get("west")!;
        const r = await west.kubectl(["create", "configmap", "watched", "--from-literal=cluster=west"]);
        assert.equal(r.code, 0, r.stderr);
        await eventually(15_000, () =>
          assert.deepEqual(events.find((e) => e.name === "watched"), {
            phase: "ADDED",
            name: "watched",
            cluster: "west",
          }));
        assert.equal(ended, "not yet", "the watch is still open");
      } finally {
        controller.abort();
      }
      await eventually(10_000, () =>
        assert.ok(
          auditLines(env).some((l) => l.user === "mc" && l.cluster === "west" && l.verb === "watch"),
          "the watch is audited when it ends",
        ));
    });

    await looseStep(
      "an agent killed mid-watch ends the watch with an error; a new agent serves",
      async () => {
        const east = env.clusters.get("east")!;
        // client-go ends a watch quietly on a truncated stream (it only logs "Unexpected EOF" at -v=1),
        // so kubectl's exit code cannot tell a dead agent from a normal end: -v=1 and a raw watch can.
        const watch = env.spawnKubectl(kubeconfig, [
          "--context=east",
          "get",
          "configmaps",
          "--watch",
          "--v=1",
        ]);
        const out = new OutputText(watch.stdout);
        const err = new OutputText(watch.stderr);
        const raw = rawWatch(port, "/clusters/east/api/v1/namespaces/default/configmaps?watch=true", tls);
        try {
          await out.waitFor(/only-east/, 15_000);
          await eventually(15_000, () => assert.match(raw.body(), /only-east/));
          const r = await east.kubectl(["create", "configmap", "during-watch"]);
          assert.equal(r.code, 0, r.stderr);
          await out.waitFor(/during-watch/, 15_000);
          await eventually(15_000, () => assert.match(raw.body(), /"ADDED".*during-watch/));

          await env.agents.get("east")!.stop("SIGKILL");
          const status = await exitWithin(watch, 20_000);
          assert.ok(status, `kubectl --watch still running 20 s after its agent died; stderr: ${err.text}`);
          assert.ok(
            status.code !== 0 || /Unexpected EOF during watch stream/.test(err.text),
            `the watch ended silently (exit ${status.code}); stderr: ${err.text}`,
          );
          const how = await Promise.race([
            raw.ended,
            new Promise((r) => setTimeout(() => r("still open"), 20_000)),
          ]);
          assert.match(String(how), /^aborted/, "the hub must cut the response, not end it as if complete");
        } finally {
          raw.close();
          try {
            watch.kill("SIGKILL");
          } catch { /* exited */ }
          await watch.status;
          await Promise.all([out.done, err.done]);
        }
        await eventually(5_000, () => {
          const line = auditLines(env).find((l) =>
            l.cluster === "east" && l.verb === "watch" && l.user === "mc"
          );
          assert.ok(line, "the broken watch is audited");
        });

        // Nothing serves east now.
        const down = await getJson(port, identityPath("east"), tls);
        assert.equal(down.status, 503, JSON.stringify(down.json));
        assert.equal(down.json.kind, "Status");

        env.agents.set("east", await env.startAgent("east", "agent-east-2"));
        await eventually(15_000, async () => {
          const r = await kubectl(["--context=east", "get", "cm", "during-watch", "-o", "name"]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.trim(), "configmap/during-watch");
        });
        // west never noticed.
        const r = await kubectl([
          "--context=west",
          "get",
          "cm",
          "identity",
          "-o",
          "jsonpath={.data.cluster}",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "west");
      },
    );

    await looseStep("two agents for one cluster share the load and survive losing one", async () => {
      const first = env.agents.get("west")!;
      const second = await env.startAgent("west", "agent-west-2");
      extraAgents.push(second);
      const [firstId, secondId] = agentIds(env, "west");
      assert.ok(firstId && secondId && firstId !== secondId, JSON.stringify(agentIds(env, "west")));

      // Requests in flight together go to the agent with the fewest open channels: both get some.
      await eventually(20_000, async () => {
        const from = auditLines(env).length;
        const got = await Promise.all(
          Array.from({ length: 20 }, () => getJson(port, identityPath("west"), tls)),
        );
        for (const r of got) assert.equal(r.status, 200);
        await eventually(5_000, () => assert.ok(auditLines(env).length >= from + 20));
        const used = new Set(
          auditLines(env).slice(from).filter((l) => l.cluster === "west").map((l) => l.agent),
        );
        assert.deepEqual([...used].sort(), [firstId, secondId].sort());
      });

      await first.stop("SIGKILL");
      const from = auditLines(env).length;
      const got = await Promise.all(
        Array.from({ length: 20 }, () => getJson(port, identityPath("west"), tls)),
      );
      got.forEach((r) => {
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.equal((r.json.data as Record<string, string>).cluster, "west");
      });
      const r = await kubectl(["--context=west", "get", "cm", "identity", "-o", "jsonpath={.data.cluster}"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "west");
      await eventually(5_000, () => {
        const after = auditLines(env).slice(from).filter((l) => l.cluster === "west");
        assert.ok(after.length >= 20);
        for (const l of after) assert.equal(l.agent, secondId);
      });
      // env.stop() stops what env.agents holds; the killed one is gone already.
      env.agents.set("west", second);
      extraAgents.pop();
    });
  } finally {
    await Promise.all(extraAgents.map((a) => a.stop()));
    await env.stop();
  }
});
