/** The status page's HTML: what it shows for a cluster, text equivalents of charts, and escaping. */

import assert from "node:assert/strict";
import {
  renderSections,
  renderStatusPage,
  sparkline,
  type StatusView,
} from "../../../lib/server/status_page.ts";

function view(): StatusView {
  const at = new Date("2026-12-01T12:00:00Z");
  return {
    at,
    clusters: {
      replicas: [{
        name: "hub-0",
        version: "0.1.0",
        takenAt: at.toISOString(),
        requests: { draining: true, ordinary: 1, longRunning: 2 },
      }],
      unreachable: ["hub-1"],
      clusters: [
        {
          name: "edge-1",
          labels: { env: "<prod>" },
          mode: "impersonate",
          port: null,
          createdAt: at.toISOString(),
          tokenRotatedAt: null,
          agents: [{
            replica: "hub-0",
            id: "edge-1#3",
            remoteAddress: "10.0.0.1",
            since: "2026-12-01T11:58:00Z",
            version: "0.1.0",
            openChannels: 2,
            bytesIn: 1,
            bytesOut: 2,
            late: true,
          }],
          streams: { watch: 2 },
        },
        {
          name: "edge-2",
          labels: {},
          mode: "passthrough",
          port: 9443,
          createdAt: at.toISOString(),
          tokenRotatedAt: null,
          agents: [],
          streams: {},
        },
      ],
    },
    rates: {
      "edge-1": {
        from: 0,
        requests: [0, 1, 4.5],
        errors: [0, 0, 0.1],
        now: { requests: 4.5, errors: 0.1 },
      },
    },
    lbPorts: [],
    refusals: [{
      time: at.toISOString(),
      what: "request",
      cluster: "edge-1",
      code: 403,
      user: "<script>alert(1)</script>",
      reason: "user may not reach",
    }],
  };
}

Deno.test("status page: clusters with state in words, agents with replica, version, since and late keepalive", () => {
  const s = renderSections(view());
  assert.match(s.clusters!, /data-cluster="edge-1" data-agents="1"/);
  assert.match(s.clusters!, /<span class="badge late">late<\/span>/);
  assert.match(
    s.clusters!,
    /edge-1#3<\/span> on <b>hub-0<\/b>, v0\.1\.0, since 11:58:00 UTC \(2 min\), 2 channels/,
  );
  assert.match(s.clusters!, /late keepalive/);
  assert.match(s.clusters!, /data-cluster="edge-2" data-agents="0".*no agent/);
  assert.match(s.clusters!, /Open streams: watch 2/);
  assert.match(s.summary!, /hub-0 \(v0\.1\.0, 3 requests in flight, <strong>draining<\/strong>\)/);
  assert.match(s.summary!, /not answering: hub-1/);
  assert.match(s["lb-ports"]!, /No LoadBalancer port/);
});

Deno.test("status page: charts carry their numbers as text; everything from outside is escaped", () => {
  const chart = sparkline([0, 1, 4.5], "Requests", "requests");
  assert.match(chart, /role="img" aria-label="Requests: 4\.5\/s now, peak 4\.5\/s over the last 15 minutes"/);
  const page = renderStatusPage(view(), "ops&co");
  assert.ok(!page.includes("<script>alert"), "a user name cannot inject markup");
  assert.ok(page.includes("&#60;script&#62;alert(1)&#60;/script&#62;"));
  assert.ok(page.includes("env=&#60;prod&#62;"));
  assert.ok(page.includes("Signed in as ops&#38;co"));
  assert.match(page, /^<!doctype html><html lang="en">/);
  assert.match(page, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
  assert.ok(!/https?:\/\//.test(page), "no external asset");
});
