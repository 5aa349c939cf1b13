/** The hub's metrics: which requests are long-running, and labels that stay bounded whatever comes in. */

import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { HubMetrics, unknownCluster } from "../../../lib/server/hub_metrics.ts";
import { ClusterSessions } from "../../../lib/server/cluster_sessions.ts";
import type { AuditEntry } from "../../../lib/server/audit.ts";
import { parseSamples, sampleSum } from "../../helpers/metrics_text.ts";

function entry(over: Partial<AuditEntry>): AuditEntry {
  return {
    user: "u",
    groups: [],
    cluster: "alpha",
    method: "GET",
    verb: "get",
    path: "/api/v1/namespaces/default/pods/p",
    status: 200,
    bytesIn: 0,
    bytesOut: 10,
    durationMs: 12,
    agent: "alpha#1",
    ...over,
  };
}

async function samples(m: HubMetrics) {
  return parseSamples(await m.registry.metrics());
}

Deno.test("HubMetrics: requests by cluster, verb and code; long-running ones kept out of the latency histogram", async () => {
  const m = new HubMetrics({
    sessions: new ClusterSessions(),
    lb: undefined,
    registered: (c) => c === "alpha",
  });
  m.request(entry({}));
  m.request(entry({ status: 404 }));
  m.request(entry({ verb: "watch", path: "/api/v1/pods", durationMs: 60_000 }));
  m.request(
    entry({ method: "POST", verb: "create", path: "/api/v1/namespaces/a/pods/p/exec", upgraded: true }),
  );
  const s = await samples(m);
  assert.equal(sampleSum(s, "tower_requests_total", { cluster: "alpha", verb: "get", code: "200" }), 1);
  assert.equal(sampleSum(s, "tower_requests_total", { cluster: "alpha", verb: "get", code: "404" }), 1);
  assert.equal(sampleSum(s, "tower_requests_total", { cluster: "alpha" }), 4);
  assert.equal(sampleSum(s, "tower_request_duration_seconds_count", { cluster: "alpha" }), 2);
  assert.equal(sampleSum(s, "tower_request_duration_seconds_count", { verb: "watch" }), 0);
  assert.equal(sampleSum(s, "tower_stream_duration_seconds_count", { kind: "watch" }), 1);
  assert.equal(sampleSum(s, "tower_stream_duration_seconds_count", { kind: "exec" }), 1);
  assert.equal(sampleSum(s, "tower_stream_duration_seconds_sum", { kind: "watch" }), 60);
});

Deno.test("HubMetrics: labels stay bounded: unknown clusters and methods fold into one value each", async () => {
  const m = new HubMetrics({
    sessions: new ClusterSessions(),
    lb: undefined,
    registered: (c) => c === "alpha",
  });
  for (let i = 0; i < 500; i++) {
    m.request(entry({ cluster: `typo-${i}`, status: 404, agent: undefined }));
    m.request(entry({ method: `X-METHOD-${i}`, verb: `x-method-${i}` }));
  }
  const s = await samples(m);
  const series = s.filter((x) => x.name === "tower_requests_total");
  assert.deepEqual(
    series.map((x) => x.labels).sort((a, b) => a.cluster!.localeCompare(b.cluster!)),
    [{ cluster: unknownCluster, verb: "get", code: "404" }, { cluster: "alpha", verb: "other", code: "200" }]
      .sort((a, b) => a.cluster.localeCompare(b.cluster)),
  );
  assert.equal(sampleSum(s, "tower_requests_total"), 1000);
});

Deno.test("HubMetrics: a hub's own 401/403 counts as an auth failure, a cluster's 403 does not", async () => {
  const m = new HubMetrics({ sessions: new ClusterSessions(), lb: undefined, registered: () => true });
  m.request(entry({ status: 401, agent: undefined }));
  m.request(entry({ status: 403, agent: undefined }));
  m.request(entry({ status: 403 })); // the cluster's RBAC said no, through an agent
  m.agentRefused("alpha");
  const s = await samples(m);
  assert.equal(sampleSum(s, "tower_auth_failures_total", { kind: "user" }), 1);
  assert.equal(sampleSum(s, "tower_auth_failures_total", { kind: "forbidden" }), 1);
  assert.equal(sampleSum(s, "tower_auth_failures_total", { kind: "agent" }), 1);
  assert.equal(sampleSum(s, "tower_agent_connects_total", { cluster: "alpha", result: "refused" }), 1);
});

Deno.test("HubMetrics: open streams rise when a long-running request starts and fall when its connection closes", async () => {
  const m = new HubMetrics({
    sessions: new ClusterSessions(),
    lb: undefined,
    registered: (c) => c === "alpha",
  });
  const watch = new PassThrough();
  const exec = new PassThrough();
  m.streamStarted("alpha", "watch", watch);
  m.streamStarted("alpha", "exec", exec);
  m.streamStarted("nope", "watch", new PassThrough());
  assert.deepEqual(await m.streamsOpen(), { alpha: { watch: 1, exec: 1 }, [unknownCluster]: { watch: 1 } });
  const closed = new Promise((r) => watch.once("close", r));
  watch.destroy();
  await closed;
  assert.deepEqual((await m.streamsOpen()).alpha, { exec: 1 });
  exec.destroy();
});
