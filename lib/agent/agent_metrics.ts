/**
 * The agent's Prometheus metrics, served on the opt-in `--metrics-listen`: channels served per kind of
 * endpoint and how their dials went, tunnel bytes, logins to the hub, and the API server's latency as
 * the agent sees it. Labels are kinds and outcomes only (never a Service or path), so they stay few.
 * @module
 */

import type { Duplex } from "node:stream";
import { Counter, Gauge, Histogram, newMetricsRegistry, type Registry } from "../metrics/mod.ts";
import type { Endpoint, TunnelStream } from "../tunnel/mod.ts";

/** The kind of an endpoint, from its name. */
export function endpointKind(name: string): "kubernetes" | "service" | "loadbalancer" | "tcp" {
  if (name === "kubernetes") return "kubernetes";
  if (name.startsWith("svc/")) return "service";
  if (name.startsWith("lb/")) return "loadbalancer";
  return "tcp";
}

/** The agent's metrics and the hooks that move them. */
export class AgentMetrics {
  /** The registry `/metrics` renders. */
  readonly registry: Registry;
  readonly #channels: Counter<"endpoint" | "result">;
  readonly #channelsOpen: Gauge<"endpoint">;
  readonly #dialSeconds: Histogram<"endpoint">;
  readonly #connects: Counter<"result">;
  readonly #apiserver: Histogram<"code">;
  readonly #tunnels = new Set<TunnelStream>();
  readonly #ended = { read: 0, written: 0 };

  constructor() {
    const registry = this.registry = newMetricsRegistry();
    const registers = [registry];
    this.#channels = new Counter({
      name: "tower_agent_channels_total",
      help: "Channels the hub opened, by endpoint kind and dial result (ok, failed).",
      labelNames: ["endpoint", "result"],
      registers,
    });
    this.#channelsOpen = new Gauge({
      name: "tower_agent_channels_open",
      help: "Channels being served now, by endpoint kind.",
      labelNames: ["endpoint"],
      registers,
    });
    this.#dialSeconds = new Histogram({
      name: "tower_agent_dial_duration_seconds",
      help: "Time to dial an endpoint's target before accepting a channel, by endpoint kind.",
      labelNames: ["endpoint"],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10],
      registers,
    });
    this.#connects = new Counter({
      name: "tower_agent_hub_connects_total",
      help: "Attempts to log in to the hub, by result (ok; duplicate: a replica already held; refused; " +
        "unreachable).",
      labelNames: ["result"],
      registers,
    });
    this.#apiserver = new Histogram({
      name: "tower_agent_apiserver_request_duration_seconds",
      help: "Time for the API server to complete a request (long-running ones left out), by status class.",
      labelNames: ["code"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
      registers,
    });
    // Read at scrape time (inside collect, `this` is the metric).
    const tunnels = () => this.#tunnels.size;
    const bytes = () => {
      const total = { ...this.#ended };
      for (const t of this.#tunnels) {
        const b = t.bytes();
        total.read += b.read;
        total.written += b.written;
      }
      return total;
    };
    new Gauge({
      name: "tower_agent_tunnels",
      help: "Tunnels to hub replicas that are up now.",
      registers,
      collect() {
        this.set(tunnels());
      },
    });
    new Counter({
      name: "tower_agent_tunnel_bytes_total",
      help: "Bytes on the tunnels to the hub (WebSocket payload), by direction (in: from the hub).",
      labelNames: ["direction"],
      registers,
      collect() {
        const b = bytes();
        this.reset();
        this.inc({ direction: "in" }, b.read);
        this.inc({ direction: "out" }, b.written);
      },
    });
  }

  /** Wraps an endpoint so its channels and dials are counted. */
  instrument(name: string, ep: Endpoint): Endpoint {
    const endpoint = endpointKind(name);
    return {
      open: async () => {
        const started = performance.now();
        let serve;
        try {
          serve = await ep.open();
        } catch (e) {
          this.#channels.inc({ endpoint, result: "failed" });
          throw e;
        }
        this.#dialSeconds.observe({ endpoint }, (performance.now() - started) / 1000);
        this.#channels.inc({ endpoint, result: "ok" });
        return (channel: Duplex) => {
          this.#channelsOpen.inc({ endpoint });
          channel.once("close", () => this.#channelsOpen.dec({ endpoint }));
          serve(channel);
        };
      },
    };
  }

  /** Counts a login attempt. */
  hubConnect(result: "ok" | "duplicate" | "refused" | "unreachable"): void {
    this.#connects.inc({ result });
  }

  /** A tunnel came up: its bytes count from now on. */
  tunnelUp(t: TunnelStream): void {
    this.#tunnels.add(t);
  }

  /** A tunnel ended: its bytes are kept in the totals. */
  tunnelDown(t: TunnelStream): void {
    if (!this.#tunnels.delete(t)) return;
    const b = t.bytes();
    this.#ended.read += b.read;
    this.#ended.written += b.written;
  }

  /** Records an API server request that took `seconds` and answered `status`. */
  apiserverResponse(seconds: number, status: number): void {
    this.#apiserver.observe({ code: `${Math.floor(status / 100)}xx` }, seconds);
  }
}
