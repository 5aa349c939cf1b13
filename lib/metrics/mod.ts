/** Prometheus metrics shared by hub and agent: registry with process metrics, scrape listener. @module */
import { Registry } from "prom-client";
import { registerProcessMetrics } from "./process_metrics.ts";

export { answerMetrics, type MetricsListener, startMetricsListener } from "./metrics_listener.ts";
export { Counter, Gauge, Histogram, Registry } from "prom-client";

/** A fresh registry holding the process metrics; each hub or agent owns one (no global registry). */
export function newMetricsRegistry(): Registry {
  const registry = new Registry();
  registerProcessMetrics(registry);
  return registry;
}
