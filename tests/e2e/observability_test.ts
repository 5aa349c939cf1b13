/**
 * Metrics and the admin API against two real clusters: the exposition passes promtool, values move with
 * kubectl traffic, a watch and an agent kill; the admin API's JSON shapes and who may read it.
 */

import assert from "node:assert/strict";
import { startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { fetchMetricsText, parseSamples, type Sample, sampleSum } from "../helpers/metrics_text.ts";
import { promtoolCheck } from "../helpers/promtool.ts";
import { serverCommand } from "../helpers/tower_procs.ts";
import type {
  AccessResponse,
  ClustersResponse,
  LbPortsResponse,
  UsersResponse,
} from "../../lib/server/admin_api.ts";

const adminGroup = "tower-admins";
const agentMetricsPort = 9464;

/** The agent's /metrics, read from inside its cluster's network namespace. */
async function agentMetricsText(env: TowerEnv, cluster: string): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      env.clusters.get(cluster)!.netns,
      "curl",
      "-sSf",
      "--max-time",
      "5",
      `http://127.0.0.1:${agentMetricsPort}/metrics`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`agent metrics of ${cluster}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** GET on the hub's front door with an optional bearer token. */
async function hubGet(
  env: TowerEnv,
  client: Deno.HttpClient,
  path: string,
  token?: string,
): Promise<{ status: number; text: string; type: string }> {
  const res = await fetch(`https://127.0.0.1:${env.hub.port}${path}`, {
    client,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return { status: res.status, text: await res.text(), type: res.headers.get("content-type") ?? "" };
}

Deno.test("metrics pass promtool and move with kubectl traffic, a watch and an agent kill; admin API shapes and authz", async () => {
  const env = await startTowerEnv({
    clusters: ["obs-a", "obs-b"],
    hubArgs: ["--admin-group", adminGroup, "--metrics-listen", "127.0.0.1:0"],
    // Each agent runs in its cluster's network namespace, so one port number serves them all.
    agentArgs: ["--metrics-listen", `127.0.0.1:${agentMetricsPort}`],
  });
  const client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(env.added.get("obs-a")!.caFile)],
  });
  try {
    const metricsAt = String((await env.hub.waitForMsg("metrics listening")).listen);
    const scrape = async (): Promise<Sample[]> =>
      parseSamples(await fetchMetricsText(`http://${metricsAt}/metrics`));
    const admin = await env.addTokenUser("ops", [adminGroup], []);
    const dev = await env.addTokenUser("dev", ["devs"], ["*"]);
    const kube = await env.addUser("kube", ["system:masters"], ["*"]);

    // Authz: anonymous 401, a user outside the admin group 403, an admin 200 (once the hub has read
    // the new users from the registry).
    for (const path of ["/api/tower/v1/clusters", "/metrics"]) {
      assert.equal((await hubGet(env, client, path)).status, 401, path);
      await eventually(
        5000,
        async () => assert.equal((await hubGet(env, client, path, dev)).status, 403, path),
      );
      await eventually(
        5000,
        async () => assert.equal((await hubGet(env, client, path, admin)).status, 200, path),
      );
    }
    const unknown = await hubGet(env, client, "/api/tower/v1/nothing", admin);
    assert.equal(unknown.status, 404);

    // Shapes.
    const clusters = JSON.parse(
      (await hubGet(env, client, "/api/tower/v1/clusters", admin)).text,
    ) as ClustersResponse;
    assert.equal(clusters.replicas.length, 1);
    assert.deepEqual(clusters.clusters.map((c) => c.name).sort(), ["obs-a", "obs-b"]);
    for (const c of clusters.clusters) {
      assert.equal(c.mode, "impersonate");
      assert.equal(c.agents.length, 1, JSON.stringify(c));
      const a = c.agents[0]!;
      assert.equal(a.replica, clusters.replicas[0]!.name);
      assert.equal(typeof a.id, "string");
      assert.ok(!Number.isNaN(Date.parse(a.since)));
      assert.equal(a.version, "0.1.0");
      assert.equal(a.late, false);
      assert.ok(a.bytesIn > 0 && a.bytesOut > 0, JSON.stringify(a));
    }
    const users = JSON.parse((await hubGet(env, client, "/api/tower/v1/users", admin)).text) as UsersResponse;
    assert.deepEqual(
      users.users.map((u) => [u.name, u.credential, u.groups]).sort(),
      [["dev", "token", ["devs"]], ["kube", "certificate", ["system:masters"]], ["ops", "token", [
        adminGroup,
      ]]],
    );
    assert.ok(!JSON.stringify(users).includes("sha256:"), "no token hash leaves the hub");
    const access = JSON.parse(
      (await hubGet(env, client, "/api/tower/v1/access", admin)).text,
    ) as AccessResponse;
    assert.deepEqual(access.rules, [
      { users: ["dev"], groups: [], clusters: ["*"], clusterSelector: null },
      { users: ["kube"], groups: [], clusters: ["*"], clusterSelector: null },
    ]);
    const lb = JSON.parse(
      (await hubGet(env, client, "/api/tower/v1/lb-ports", admin)).text,
    ) as LbPortsResponse;
    assert.deepEqual(lb, { ports: [] });

    // `cluster list` asks the same API (over the data dir's admin socket).
    const listed = await serverCommand(["cluster", "list", "--data-dir", env.dataDir]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^obs-a\s+1\s/m);
    assert.match(listed.stdout, /^obs-b\s+1\s/m);
    assert.ok(!listed.stdout.includes("not running"), listed.stdout);

    // A kubectl get bumps tower_requests_total{verb="get",code="200"} and the latency histogram.
    const before = await scrape();
    const got = await env.kubectl(kube, ["--context", "obs-a", "get", "--raw", "/api/v1/namespaces/default"]);
    assert.equal(got.code, 0, got.stderr);
    const ok = { cluster: "obs-a", verb: "get", code: "200" };
    const after = await eventually(5000, async () => {
      const s = await scrape();
      assert.ok(sampleSum(s, "tower_requests_total", ok) > sampleSum(before, "tower_requests_total", ok));
      return s;
    });
    assert.ok(
      sampleSum(after, "tower_request_duration_seconds_count", { cluster: "obs-a", verb: "get" }) >
        sampleSum(before, "tower_request_duration_seconds_count", { cluster: "obs-a", verb: "get" }),
    );
    assert.ok(sampleSum(after, "tower_tunnel_bytes_total", { cluster: "obs-a", direction: "in" }) > 0);
    assert.ok(sampleSum(after, "tower_channel_open_duration_seconds_count", { result: "ok" }) > 0);
    assert.equal(sampleSum(after, "tower_agent_connects_total", { cluster: "obs-b", result: "ok" }), 1);
    assert.ok(sampleSum(after, "process_resident_memory_bytes") > 0);
    assert.ok(sampleSum(after, "process_cpu_seconds_total") > 0);

    // The agent's own metrics moved with the same request, and pass promtool too.
    const agentText = await agentMetricsText(env, "obs-a");
    const agent = parseSamples(agentText);
    assert.ok(sampleSum(agent, "tower_agent_channels_total", { endpoint: "kubernetes", result: "ok" }) > 0);
    assert.ok(sampleSum(agent, "tower_agent_apiserver_request_duration_seconds_count", { code: "2xx" }) > 0);
    assert.ok(sampleSum(agent, "tower_agent_tunnel_bytes_total", { direction: "in" }) > 0, agentText);
    assert.ok(sampleSum(agent, "tower_agent_tunnel_bytes_total", { direction: "out" }) > 0, agentText);
    assert.equal(sampleSum(agent, "tower_agent_tunnels"), 1);
    assert.equal(sampleSum(agent, "tower_agent_hub_connects_total", { result: "ok" }), 1);
    const agentCheck = await promtoolCheck(agentText);
    assert.equal(agentCheck.code, 0, `promtool check metrics (agent):\n${agentCheck.output}`);

    // A watch shows as an open stream while it runs, and is not in the latency histogram when it ends.
    const watch = env.spawnKubectl(kube, ["--context", "obs-a", "get", "namespaces", "--watch"]);
    await eventually(10_000, async () => {
      assert.equal(sampleSum(await scrape(), "tower_streams_open", { cluster: "obs-a", kind: "watch" }), 1);
    });
    const apiStreams = JSON.parse(
      (await hubGet(env, client, "/api/tower/v1/clusters", admin)).text,
    ) as ClustersResponse;
    assert.deepEqual(apiStreams.clusters.find((c) => c.name === "obs-a")?.streams, { watch: 1 });
    watch.kill("SIGTERM");
    await watch.output();
    const watched = await eventually(10_000, async () => {
      const s = await scrape();
      assert.equal(sampleSum(s, "tower_streams_open", { cluster: "obs-a", kind: "watch" }), 0);
      assert.equal(sampleSum(s, "tower_stream_duration_seconds_count", { kind: "watch" }), 1);
      return s;
    });
    assert.equal(sampleSum(watched, "tower_request_duration_seconds_count", { verb: "watch" }), 0);

    // The exposition, with every kind of series now present, passes Prometheus' own checker.
    const text = await fetchMetricsText(`http://${metricsAt}/metrics`);
    const check = await promtoolCheck(text);
    assert.equal(check.code, 0, `promtool check metrics:\n${check.output}`);
    for (
      const name of [
        "tower_agent_sessions",
        "tower_agent_connects_total",
        "tower_agent_session_duration_seconds",
        "tower_requests_total",
        "tower_request_duration_seconds",
        "tower_stream_duration_seconds",
        "tower_streams_open",
        "tower_tunnel_bytes_total",
        "tower_channels_open",
        "tower_channel_open_duration_seconds",
        "tower_lb_ports_allocated",
        "tower_lb_flows_open",
        "tower_lb_flows_refused_total",
        "tower_auth_failures_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
      ]
    ) assert.ok(text.includes(`# TYPE ${name} `), `${name} is exposed`);
    // The front door's /metrics (admin) serves the same registry.
    assert.ok(
      (await hubGet(env, client, "/metrics", admin)).text.includes("# TYPE tower_requests_total counter"),
    );
    // No user names and no paths in any label.
    assert.ok(!/user="|path="|"kube"|"dev"|"ops"/.test(text), "labels carry no users or paths");
    // Refused credentials were counted: anonymous (user) and dev (forbidden) above.
    assert.ok(sampleSum(watched, "tower_auth_failures_total", { kind: "user" }) >= 2);
    assert.ok(sampleSum(watched, "tower_auth_failures_total", { kind: "forbidden" }) >= 2);

    // An agent killed: its session is gone from the gauge, the API and `cluster list`.
    assert.equal(sampleSum(await scrape(), "tower_agent_sessions", { cluster: "obs-b" }), 1);
    await env.agents.get("obs-b")!.stop("SIGKILL");
    await eventually(10_000, async () => {
      const s = await scrape();
      assert.equal(sampleSum(s, "tower_agent_sessions", { cluster: "obs-b" }), 0);
      assert.equal(sampleSum(s, "tower_agent_session_duration_seconds_count"), 1);
      assert.equal(sampleSum(s, "tower_agent_sessions", { cluster: "obs-a" }), 1);
    });
    const gone = JSON.parse(
      (await hubGet(env, client, "/api/tower/v1/clusters", admin)).text,
    ) as ClustersResponse;
    assert.equal(gone.clusters.find((c) => c.name === "obs-b")?.agents.length, 0);
    const relisted = await serverCommand(["cluster", "list", "--data-dir", env.dataDir]);
    assert.match(relisted.stdout, /^obs-b\s+0\s/m);
    // Bytes carried by the dead session still count.
    assert.ok(
      sampleSum(await scrape(), "tower_tunnel_bytes_total", { cluster: "obs-b", direction: "in" }) > 0,
    );
  } finally {
    client.close();
    await env.stop();
  }
});
