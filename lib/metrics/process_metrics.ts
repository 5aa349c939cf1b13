/**
 * Process metrics with the standard Prometheus names, read from what Deno reports without extra
 * permissions. prom-client's own default collector reads /proc, which the hub and agent permission sets
 * do not allow: it would export zeros, so it is not used.
 * @module
 */

import process from "node:process";
import { Counter, Gauge, type Registry } from "prom-client";

/** Registers `process_*` metrics (CPU, memory, start time) and Deno's heap gauges in `registry`. */
export function registerProcessMetrics(registry: Registry): void {
  const started = Date.now() / 1000 - performance.now() / 1000;
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds.",
    registers: [registry],
    collect() {
      this.set(Math.round(started));
    },
  });
  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent, in seconds.",
    registers: [registry],
    collect() {
      // The OS keeps the running total; the counter takes it over at each scrape.
      const u = process.cpuUsage();
      this.reset();
      this.inc((u.user + u.system) / 1e6);
    },
  });
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  // Deno's own memory account: what V8's heap holds and reserves, and memory outside it (buffers).
  const memory: [string, string, keyof Deno.MemoryUsage][] = [
    ["deno_heap_used_bytes", "V8 heap in use, in bytes.", "heapUsed"],
    ["deno_heap_total_bytes", "V8 heap reserved, in bytes.", "heapTotal"],
    [
      "deno_external_memory_bytes",
      "Memory outside the V8 heap held by JavaScript objects (buffers).",
      "external",
    ],
  ];
  for (const [name, help, field] of memory) {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(Deno.memoryUsage()[field]);
      },
    });
  }
}
