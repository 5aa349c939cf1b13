/**
 * The hub's Prometheus metrics. Requests are counted where audit entries are made (one seam: the audit
 * log handed to the Kubernetes route is wrapped), sessions and channels are read from the live sessions
 * at scrape time, so the request path pays one counter and at most one histogram update per request.
 *
 * Cardinality is bounded by clusters × verbs × codes: a cluster label is only ever a registered cluster
 * (anything else is `_unknown`), verbs come from a fixed set, and no label carries a user or a path.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import { Counter, Gauge, Histogram, newMetricsRegistry, type Registry } from "../metrics/mod.ts";
import { type LongRunningKind, longRunningKind } from "../kube/long_running.ts";
import type { AgentConnection } from "../tunnel/mod.ts";
import { type AuditEntry, type AuditLog, refusedByHub } from "./audit.ts";
import type { ClusterSessions } from "./cluster_sessions.ts";
import type { LbManager } from "./lb_manager.ts";

/** What the metrics read from the running hub. */
export interface HubMetricsSources {
  sessions: ClusterSessions;
  lb: LbManager | undefined;
  /** Whether `cluster` is registered now (labels never name anything else). */
  registered(cluster: string): boolean;
}

/** The label for clusters that are not registered (a typo in a URL, an unknown agent login). */
export const unknownCluster = "_unknown";

const verbs = new Set(["get", "list", "watch", "create", "update", "patch", "delete", "proxy", "options"]);

/** Results of a channel asked of the peers (see peer_channels.ts). */
export type PeerForwardResult = "ok" | "failed" | "no_agent";
const peerForwardResults: PeerForwardResult[] = ["ok", "failed", "no_agent"];

/** Seconds buckets for API latency: 5 ms to a minute. */
const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Seconds buckets for things that last: a second to a week. */
const lifetimeBuckets = [1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 7 * 86400];

/** The hub's metrics and the hooks that move them. */
export class HubMetrics {
  /** The registry `/metrics` renders. */
  readonly registry: Registry;
  readonly #src: HubMetricsSources;
  readonly #requests: Counter<"cluster" | "verb" | "code">;
  readonly #latency: Histogram<"cluster" | "verb">;
  readonly #streamDuration: Histogram<"kind">;
  readonly #streamsOpen: Gauge<"cluster" | "kind">;
  readonly #connects: Counter<"cluster" | "result">;
  readonly #sessionDuration: Histogram;
  readonly #channelOpen: Histogram<"result">;
  readonly #authFailures: Counter<"kind">;
  readonly #lbRefused: Counter<"reason">;
  readonly #peerForwards: Counter<"result">;
  /** Tunnel bytes of sessions that have ended, per cluster, so the byte counters never go down. */
  readonly #endedBytes = new Map<string, { read: number; written: number }>();
  /** Listeners of request outcomes (the status page's rate history). */
  readonly #onRequest = new Set<(entry: AuditEntry, cluster: string) => void>();

  constructor(src: HubMetricsSources) {
    this.#src = src;
    const registry = this.registry = newMetricsRegistry();
    const registers = [registry];
    this.#requests = new Counter({
      name: "tower_requests_total",
      help: "Requests to clusters through the hub, by cluster, Kubernetes verb and HTTP status code.",
      labelNames: ["cluster", "verb", "code"],
      registers,
    });
    this.#latency = new Histogram({
      name: "tower_request_duration_seconds",
      help: "Time to complete a request that is not long-running (watch, logs, exec, attach, " +
        "port-forward and proxy streams are in tower_stream_duration_seconds).",
      labelNames: ["cluster", "verb"],
      buckets: latencyBuckets,
      registers,
    });
    this.#streamDuration = new Histogram({
      name: "tower_stream_duration_seconds",
      help: "Lifetime of long-running requests (watch, logs, exec, attach, port-forward, proxy, service).",
      labelNames: ["kind"],
      buckets: lifetimeBuckets,
      registers,
    });
    this.#streamsOpen = new Gauge({
      name: "tower_streams_open",
      help: "Long-running requests in progress, by cluster and kind.",
      labelNames: ["cluster", "kind"],
      registers,
    });
    this.#connects = new Counter({
      name: "tower_agent_connects_total",
      help: "Agent logins, by cluster and result (ok, refused).",
      labelNames: ["cluster", "result"],
      registers,
    });
    this.#sessionDuration = new Histogram({
      name: "tower_agent_session_duration_seconds",
      help: "Lifetime of agent sessions that have ended.",
      buckets: lifetimeBuckets,
      registers,
    });
    new Gauge({
      name: "tower_agent_sessions",
      help: "Agent sessions connected to this hub, by cluster.",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const c of src.sessions.clusters()) this.set({ cluster: c }, src.sessions.of(c).length);
      },
    });
    new Gauge({
      name: "tower_channels_open",
      help: "SSH channels open to agents, by cluster.",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const c of src.sessions.clusters()) {
          this.set({ cluster: c }, src.sessions.of(c).reduce((n, a) => n + a.openChannels, 0));
        }
      },
    });
    this.#channelOpen = new Histogram({
      name: "tower_channel_open_duration_seconds",
      help: "Time for an agent to accept (or refuse) a new channel, by result.",
      labelNames: ["result"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    const ended = this.#endedBytes;
    new Counter({
      name: "tower_tunnel_bytes_total",
      help: "Bytes on agent tunnels (WebSocket payload), by cluster and direction (in: from agents).",
      labelNames: ["cluster", "direction"],
      registers,
      collect() {
        this.reset();
        const totals = new Map([...ended].map(([c, b]) => [c, { ...b }]));
        for (const c of src.sessions.clusters()) {
          const t = totals.get(c) ?? { read: 0, written: 0 };
          for (const a of src.sessions.of(c)) {
            const b = a.bytes();
            t.read += b.read;
            t.written += b.written;
          }
          totals.set(c, t);
        }
        for (const [cluster, t] of totals) {
          this.inc({ cluster, direction: "in" }, t.read);
          this.inc({ cluster, direction: "out" }, t.written);
        }
      },
    });
    new Gauge({
      name: "tower_lb_ports_allocated",
      help: "Public LoadBalancer ports this hub serves.",
      registers,
      collect() {
        this.set(src.lb?.allocations().length ?? 0);
      },
    });
    new Gauge({
      name: "tower_lb_flows_open",
      help: "Open flows on public LoadBalancer ports (TCP connections, UDP peers), by protocol.",
      labelNames: ["protocol"],
      registers,
      collect() {
        const open = src.lb?.flowsOpen() ?? { tcp: 0, udp: 0 };
        this.set({ protocol: "tcp" }, open.tcp);
        this.set({ protocol: "udp" }, open.udp);
      },
    });
    this.#lbRefused = new Counter({
      name: "tower_lb_flows_refused_total",
      help: "Flows on public LoadBalancer ports that were not carried, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.#peerForwards = new Counter({
      name: "tower_peer_forwards_total",
      help: "Channels this replica opened through a peer replica (it held no suitable agent session), " +
        "by result: ok, failed (every holder refused or was unreachable), no_agent (no peer holds one).",
      labelNames: ["result"],
      registers,
    });
    for (const result of peerForwardResults) this.#peerForwards.inc({ result }, 0);
    this.#authFailures = new Counter({
      name: "tower_auth_failures_total",
      help: "Refused credentials, by kind: user (no or bad credentials), forbidden (no access rule or " +
        "not an admin), agent (wrong join token or unknown cluster).",
      labelNames: ["kind"],
      registers,
    });
  }

  /** The cluster label for `name`. */
  cluster(name: string): string {
    return this.#src.registered(name) ? name : unknownCluster;
  }

  /** An audit log that also counts every entry; the one place request metrics are taken. */
  observing(audit: AuditLog): AuditLog {
    return {
      record: (entry) => {
        this.request(entry);
        audit.record(entry);
      },
      close: () => audit.close(),
    };
  }

  /** Counts one finished request from its audit entry. */
  request(e: AuditEntry): void {
    const cluster = this.cluster(e.cluster);
    const verb = verbs.has(e.verb) ? e.verb : "other";
    this.#requests.inc({ cluster, verb, code: e.status });
    // The audit path is cluster-relative and has no query; a watch by query is known by its verb.
    const kind = e.verb === "watch" ? "watch" : longRunningKind(e.method, e.path, e.upgraded === true);
    if (kind) this.#streamDuration.observe({ kind }, e.durationMs / 1000);
    else this.#latency.observe({ cluster, verb }, e.durationMs / 1000);
    // A 401 or a 403 the hub gave itself (no agent carried it) is a refused credential.
    if (refusedByHub(e) && (e.status === 401 || e.status === 403)) {
      this.authFailure(e.status === 401 ? "user" : "forbidden");
    }
    for (const h of this.#onRequest) h(e, cluster);
  }

  /** Calls `handler` with each finished request's audit entry and cluster label. */
  onRequest(handler: (entry: AuditEntry, cluster: string) => void): void {
    this.#onRequest.add(handler);
  }

  /** Counts a long-running request of `kind` from now until `closes` closes. */
  streamStarted(cluster: string, kind: LongRunningKind, closes: Duplex | http.ServerResponse): void {
    const labels = { cluster: this.cluster(cluster), kind };
    this.#streamsOpen.inc(labels);
    closes.once("close", () => this.#streamsOpen.dec(labels));
  }

  /** Long-running requests open now, by cluster and kind (for the admin API). */
  async streamsOpen(): Promise<Record<string, Record<string, number>>> {
    const out: Record<string, Record<string, number>> = {};
    for (const v of (await this.#streamsOpen.get()).values) {
      if (!v.value) continue;
      (out[String(v.labels.cluster)] ??= {})[String(v.labels.kind)] = v.value;
    }
    return out;
  }

  /** Counts an agent login and, when it ends, its lifetime and bytes. */
  agentConnected(agent: AgentConnection): void {
    this.#connects.inc({ cluster: this.cluster(agent.cluster), result: "ok" });
    agent.onClose(() => {
      this.#sessionDuration.observe((Date.now() - agent.since.getTime()) / 1000);
      if (!this.#src.registered(agent.cluster)) return;
      const b = agent.bytes();
      const t = this.#endedBytes.get(agent.cluster) ?? { read: 0, written: 0 };
      this.#endedBytes.set(agent.cluster, { read: t.read + b.read, written: t.written + b.written });
    });
  }

  /** Counts a refused agent login. */
  agentRefused(cluster: string): void {
    this.#connects.inc({ cluster: this.cluster(cluster), result: "refused" });
    this.authFailure("agent");
  }

  /** Counts a refused credential of `kind`. */
  authFailure(kind: "user" | "forbidden" | "agent"): void {
    this.#authFailures.inc({ kind });
  }

  /** Records how long an agent took to answer a channel open. */
  channelOpened(seconds: number, ok: boolean): void {
    this.#channelOpen.observe({ result: ok ? "ok" : "refused" }, seconds);
  }

  /** Counts one channel asked of the peers, by its result. */
  peerForward(result: PeerForwardResult): void {
    this.#peerForwards.inc({ result });
  }

  /** Counts a LoadBalancer flow that was not carried. */
  lbRefused(reason: string): void {
    this.#lbRefused.inc({ reason });
  }
}
