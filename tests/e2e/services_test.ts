/**
 * Hub users reaching a cluster's Services end to end: the service path
 * `/clusters/NAME/services/NS/SVC:PORT/…` (plain HTTP and WebSocket), its authentication and
 * authorization, the agent's namespace allowlist (no way to make the agent dial anything it did not
 * publish), and `main_server.ts forward` with half-close. Backends are real servers inside the cluster's
 * network namespace behind hand-written EndpointSlices.
 */

import assert from "node:assert/strict";
import net from "node:net";
import { createHash } from "node:crypto";
import WebSocket from "ws";
import { auditLines, type Backend, startTowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { hubRequest, serviceWithSlice, startBackend, tlsOfKubeconfig } from "./_service_helpers.ts";
import { serverCommand, TowerProcess } from "../helpers/tower_procs.ts";
import { patternChunk } from "../helpers/net_servers.ts";

const clusterName = "alpha";

/** What the `http` backend reports about a request it served. */
interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  served: number;
}

Deno.test("services: the hub's service path and `forward` reach allowed Services only", async (t) => {
  const env = await startTowerEnv({
    clusters: [clusterName],
    agentArgs: ["--services-namespaces", "web"],
  });
  const cluster = env.clusters.get(clusterName)!;
  const agent = env.agents.get(clusterName)!;
  const backends: Backend[] = [];
  let forwarder: TowerProcess | undefined;
  const step = (name: string, fn: () => Promise<void>) =>
    t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });
  try {
    backends.push(await startBackend(cluster, "http", 8080));
    backends.push(await startBackend(cluster, "bufecho", 9000));
    for (const n of ["web", "other"]) {
      assert.equal((await cluster.kubectl(["create", "namespace", n])).code, 0);
    }
    const r = await cluster.kubectl(["apply", "-f", "-"], {
      stdin: JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          ...serviceWithSlice(cluster, "web", "hello", 80, 8080),
          ...serviceWithSlice(cluster, "web", "echo", 9000, 9000),
          // The same backend, in a namespace the agent does not serve.
          ...serviceWithSlice(cluster, "other", "hello", 80, 8080),
        ],
      }),
    });
    assert.equal(r.code, 0, r.stderr);

    const port = env.hub.port;
    const ca = await Deno.readTextFile(env.added.get(clusterName)!.caFile);
    const userKubeconfig = await env.addUser("svc-user", ["devs"], [clusterName]);
    // A second registered cluster (no agent needed) that the stranger may reach instead of ours.
    const added = await serverCommand(["cluster", "add", "beta", "--data-dir", env.dataDir]);
    assert.equal(added.code, 0, added.stderr);
    const strangerKubeconfig = await env.addUser("stranger", ["outsiders"], ["beta"]);
    const user = await tlsOfKubeconfig(userKubeconfig, ca);
    const stranger = await tlsOfKubeconfig(strangerKubeconfig, ca);
    const helloPath = `/clusters/${clusterName}/services/web/hello:80`;
    /** How many requests the backend has served (it counts every request, whichever Service led to it). */
    const served = async () => {
      const res = await hubRequest(port, `${helloPath}/count`, user);
      assert.equal(res.status, 200, res.body);
      return (JSON.parse(res.body) as Seen).served;
    };

    await step("HTTP through the service path: backend answers, never sees hub credentials", async () => {
      // The running hub applies `user add` when it sees the registry change; the agent publishes the
      // Service once its informer has it.
      const res = await eventually(20_000, async () => {
        const res = await hubRequest(port, `${helloPath}/some/path?x=1`, user, {
          authorization: "Bearer not-for-the-backend",
          "impersonate-user": "admin",
          "impersonate-group": "system:masters",
          "x-tower-auth-mode": "passthrough",
          "x-app": "kept",
        });
        assert.equal(res.status, 200, res.body);
        return res;
      });
      const seen = JSON.parse(res.body) as Seen;
      assert.equal(seen.method, "GET");
      assert.equal(seen.path, "/some/path?x=1");
      assert.equal(seen.headers["x-app"], "kept");
      assert.equal(seen.headers.host, "hello.web.svc:80");
      // The client's address, appended by the hub (the backend's own peer is the agent).
      assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
      for (const h of Object.keys(seen.headers)) {
        assert.ok(
          h !== "authorization" && !h.startsWith("impersonate-") && !h.startsWith("x-tower-"),
          `backend got ${h}: ${seen.headers[h]}`,
        );
      }
      // The named Service port works too.
      const named = await hubRequest(port, `/clusters/${clusterName}/services/web/hello:main/named`, user);
      assert.equal(named.status, 200, named.body);
      assert.equal((JSON.parse(named.body) as Seen).path, "/named");
      assert.equal((JSON.parse(named.body) as Seen).headers.host, "hello.web.svc");

      const before = await served();
      const denied = await hubRequest(port, `${helloPath}/x`, stranger);
      assert.equal(denied.status, 403, denied.body);
      assert.match(denied.body, /may not reach cluster/);
      const anonymous = await hubRequest(port, `${helloPath}/x`, { ca });
      assert.equal(anonymous.status, 401, anonymous.body);
      const badToken = await hubRequest(port, `${helloPath}/x`, { ca }, { authorization: "Bearer nope" });
      assert.equal(badToken.status, 401, badToken.body);
      assert.equal(await served(), before + 1, "refused requests never reached the backend");

      await eventually(5_000, () => {
        const lines = auditLines(env).filter((l) => l.path === "/services/web/hello:80/some/path");
        assert.ok(lines.length > 0, JSON.stringify(auditLines(env)));
        const ok = lines.find((l) => l.status === 200)!;
        assert.equal(ok.verb, "proxy");
        assert.equal(ok.user, "svc-user");
        assert.equal(ok.cluster, clusterName);
        const refused = auditLines(env).filter((l) => l.path === "/services/web/hello:80/x");
        assert.deepEqual(refused.map((l) => l.status).sort(), [401, 401, 403]);
        assert.ok(refused.every((l) => l.verb === "proxy"));
        assert.ok(!JSON.stringify(auditLines(env)).includes("not-for-the-backend"));
      });
    });

    await step("a WebSocket upgrade through the service path", async () => {
      const ws = new WebSocket(`wss://127.0.0.1:${port}${helloPath}/ws`, { ...user });
      try {
        await new Promise<void>((resolve, reject) => {
          ws.once("open", () => resolve());
          ws.once(
            "unexpected-response",
            (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)),
          );
          ws.once("error", reject);
        });
        const replies: string[] = [];
        const got = new Promise<void>((resolve) =>
          ws.on("message", (m: Uint8Array) => {
            replies.push(new TextDecoder().decode(m));
            if (replies.length === 3) resolve();
          })
        );
        for (const m of ["one", "two", "three"]) ws.send(m);
        await got;
        assert.deepEqual(replies, ["echo:one", "echo:two", "echo:three"]);
      } finally {
        const closed = new Promise((r) => ws.once("close", r));
        ws.close();
        await closed;
      }
      await eventually(5_000, () => {
        const line = auditLines(env).find((l) => l.path === "/services/web/hello:80/ws" && l.upgraded);
        assert.ok(line, JSON.stringify(auditLines(env)));
        assert.equal(line.verb, "proxy");
        assert.equal(line.status, 101);
      });
    });

    await step(
      "unserved namespaces, unpublished ports and address tricks are refused, never dialed",
      async () => {
        const before = await served();
        const refusedLinesBefore = agent.count("channel refused");
        const unpublished = [
          // Same backend as web/hello, but `other` is not in --services-namespaces.
          `/clusters/${clusterName}/services/other/hello:80/`,
          // The target port is not a Service port.
          `/clusters/${clusterName}/services/web/hello:8080/`,
          `/clusters/${clusterName}/services/web/nosuch:80/`,
          `/clusters/${clusterName}/services/default/kubernetes:443/`,
        ];
        for (const path of unpublished) {
          const res = await hubRequest(port, path, user);
          assert.equal(res.status, 503, `${path}: ${res.body}`);
          assert.match(res.body, /no agent of cluster 'alpha' publishes endpoint 'svc\//, path);
        }
        const malformed = [
          `/clusters/${clusterName}/services/web/1.2.3.4:80/`,
          `/clusters/${clusterName}/services/web/hello.other:80/`,
          `/clusters/${clusterName}/services/web/hello:80@1.2.3.4/`,
          `/clusters/${clusterName}/services/web%2Fhello:80/`,
          `/clusters/${clusterName}/services/web/hello%3A80/`,
          `/clusters/${clusterName}/services/web/hello:80/../../other/hello:80/`,
          `/clusters/${clusterName}/services/web/10.0.0.1:80/`,
        ];
        for (const path of malformed) {
          const res = await hubRequest(port, path, user);
          assert.equal(res.status, 400, `${path}: ${res.status} ${res.body}`);
        }
        assert.equal(await served(), before + 1, "no refused request reached the backend");
        // Nothing was even asked of the agent: the hub refuses names no agent published.
        assert.equal(agent.count("channel refused"), refusedLinesBefore);
        assert.ok(!agent.dump().includes("1.2.3.4"), "the agent never saw the address");
        assert.equal(agent.count("service backend dial failed"), 0);
      },
    );

    await step("`main_server.ts forward`: 5 MiB echo byte-identical across a half-close", async () => {
      forwarder = new TowerProcess("forward", [
        "run",
        "-P=client",
        "--no-prompt",
        "main_server.ts",
        "forward",
        "--kubeconfig",
        userKubeconfig,
        `${clusterName}/web/echo:9000`,
        "127.0.0.1:0",
      ]);
      const line = await forwarder.waitForMsg("forwarding");
      const localPort = Number(String(line.listen).split(":").pop());
      const total = 5 << 20;
      const s = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: "127.0.0.1", port: localPort, allowHalfOpen: true });
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      });
      const sent = createHash("sha256");
      const got = createHash("sha256");
      let n = 0;
      let beforeEnd = 0;
      let ended = false;
      const received = new Promise<void>((resolve, reject) => {
        s.on("data", (c: Uint8Array) => {
          got.update(c);
          n += c.length;
          if (!ended) beforeEnd += c.length;
        });
        s.once("end", resolve);
        s.once("error", reject);
      });
      for (let off = 0, seed = 7; off < total; off += 1 << 20, seed++) {
        const data = patternChunk(seed, 1 << 20);
        sent.update(data);
        if (!s.write(data)) await new Promise((r) => s.once("drain", r));
      }
      ended = true;
      s.end();
      await received;
      s.destroy();
      // The backend answers only after it saw our end: every byte arrived after the half-close.
      assert.equal(beforeEnd, 0);
      assert.equal(n, total);
      assert.equal(got.digest("hex"), sent.digest("hex"));
      await eventually(5_000, () => {
        const a = auditLines(env).find((l) => l.path === "/services/web/echo:9000" && l.upgraded);
        assert.ok(a, JSON.stringify(auditLines(env)));
        assert.equal(a.verb, "proxy");
        assert.equal(a.user, "svc-user");
        assert.equal(a.bytesIn, total);
        assert.equal(a.bytesOut, total);
      });
    });
  } finally {
    await forwarder?.stop();
    await Promise.all(backends.map((b) => b.stop()));
    await env.stop();
  }
});
