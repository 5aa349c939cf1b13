/**
 * What the hub's per-request metrics cost: the time to count one request as the audit seam does (the
 * request counter, the latency histogram and the status page's rate history), in-process.
 * @module
 */

import { round, type Row } from "./_util.ts";
import { HubMetrics } from "../lib/server/hub_metrics.ts";
import { ClusterSessions } from "../lib/server/cluster_sessions.ts";
import { StatusHistory } from "../lib/server/status_history.ts";
import type { AuditEntry } from "../lib/server/audit.ts";

/** Runs the scenario: `calls` counted requests over 4 clusters and 4 verbs, after a warm-up. */
export function metricsBench(calls: number): Row[] {
  const m = new HubMetrics({ sessions: new ClusterSessions(), lb: undefined, registered: () => true });
  const history = new StatusHistory();
  m.onRequest((e, cluster) => history.request(e, cluster));
  const entries: AuditEntry[] = ["get", "list", "create", "patch"].map((verb, i) => ({
    user: "u",
    groups: [],
    cluster: `c${i}`,
    method: "GET",
    verb,
    path: "/api/v1/namespaces/default/configmaps/cm-0",
    status: 200,
    bytesIn: 0,
    bytesOut: 300,
    durationMs: 2,
    agent: "c#1",
  }));
  for (let i = 0; i < 20_000; i++) m.request(entries[i % 4]!);
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) m.request(entries[i % 4]!);
  return [{
    scenario: "metrics",
    case: `${calls} requests counted in-process`,
    microsPerRequest: round((performance.now() - t0) * 1000 / calls),
  }];
}
