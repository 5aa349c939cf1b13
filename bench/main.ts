/**
 * `deno task bench`: Tower's benchmarks, each printed as a table row and written as JSON under
 * bench/results/. The default run is short (well under 10 minutes on 2 cores); flags pick scenarios
 * and sizes. `--smoke` runs every scenario with tiny sizes (CI runs it so the suite never rots; it
 * asserts nothing about speed).
 *
 *   deno task bench [--only cipher,throughput,latency,list,watch,metrics,scale,fairness,cpu,rtt,connect,bulk,ha,ha-sessions]
 *                   [--bytes MiB] [--seconds S] [--list N] [--scale 100,500,1000] [--smoke]
 *                   [--ha-agents N] [--ha-agents-per-process N]
 *
 * `ha` is the request rows through several replicas; `ha-sessions` the idle sessions on 3 replicas and
 * their rolling restart (the issue's size: `--only ha-sessions --ha-agents 5000`, 10,000 sessions).
 * @module
 */
// deno-lint-ignore-file no-console

import { parseArgs } from "node:util";
import os from "node:os";
import { join } from "node:path";
import type { Row } from "./_util.ts";
import { channelCostBench, tunnelBench } from "./tunnel_bench.ts";
import { cipherBench } from "./cipher_bench.ts";
import { proxyBench } from "./proxy_bench.ts";
import { scaleBench } from "./scale_bench.ts";
import { metricsBench } from "./metrics_bench.ts";
import { haRequestBench, haSessionsBench } from "./ha_bench.ts";
import { cipherOrder } from "../lib/tunnel/mod.ts";
import { repoRoot } from "../tests/helpers/tower_procs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string" },
    bytes: { type: "string" },
    seconds: { type: "string" },
    list: { type: "string" },
    scale: { type: "string" },
    "ha-agents": { type: "string" },
    "ha-agents-per-process": { type: "string" },
    smoke: { type: "boolean", default: false },
    out: { type: "string" },
  },
});
const smoke = values.smoke === true;
const only = new Set(
  String(
    values.only ??
      "cipher,throughput,latency,list,watch,metrics,scale,fairness,cpu,rtt,connect,bulk,ha,ha-sessions",
  )
    .split(
      ",",
    ),
);
const MiB = 1 << 20;
const bytes = Number(values.bytes ?? (smoke ? 4 : 512)) * MiB;
const seconds = Number(values.seconds ?? (smoke ? 1 : 10));
const listCount = Number(values.list ?? (smoke ? 50 : 5000));
const scale = String(values.scale ?? (smoke ? "5" : "100,500,1000")).split(",").map(Number);

const machine = {
  cores: os.cpus().length,
  cpu: os.cpus()[0]?.model,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  deno: Deno.version.deno,
  v8: Deno.version.v8,
  cipher: cipherOrder[0],
  date: new Date().toISOString(),
  smoke,
};
console.log(
  `Tower benchmarks on ${machine.cores} cores (${machine.cpu}), Deno ${machine.deno}, cipher ${machine.cipher}`,
);

function print(rows: Row[]): void {
  for (const r of rows) {
    const { scenario, case: name, ...metrics } = r;
    console.log(
      `${scenario.padEnd(13)} ${name.padEnd(40)} ${
        Object.entries(metrics).map(([k, v]) => `${k}=${v}`).join(" ")
      }`,
    );
  }
}

const rows: Row[] = [];
if (only.has("cipher")) {
  const r = await cipherBench(Math.min(bytes, 128 * MiB));
  print(r);
  rows.push(...r);
}
if (only.has("throughput") || only.has("fairness") || only.has("cpu")) {
  const r = await tunnelBench(bytes);
  print(r);
  rows.push(...r);
}
if (only.has("rtt") || only.has("connect") || only.has("bulk")) {
  const r = await channelCostBench({
    roundTrips: only.has("rtt") ? (smoke ? 50 : 5000) : 0,
    connectSeconds: only.has("connect") ? (smoke ? 0.5 : seconds) : 0,
    bulkBytes: only.has("bulk") ? bytes : 0,
  });
  print(r);
  rows.push(...r);
}
if (only.has("latency") || only.has("list") || only.has("watch")) {
  const r = await proxyBench({ seconds, listCount, watchUpdates: smoke ? 10 : 200 });
  print(r);
  rows.push(...r);
}
if (only.has("metrics")) {
  const r = metricsBench(smoke ? 10_000 : 500_000);
  print(r);
  rows.push(...r);
}
if (only.has("scale")) {
  const r = await scaleBench(scale);
  print(r);
  rows.push(...r);
}
if (only.has("ha")) {
  const r = await haRequestBench(seconds);
  print(r);
  rows.push(...r);
}
if (only.has("ha-sessions")) {
  const r = await haSessionsBench({
    agents: Number(values["ha-agents"] ?? (smoke ? 5 : 500)),
    agentsPerProcess: Number(values["ha-agents-per-process"] ?? 1250),
  });
  print(r);
  rows.push(...r);
}
const dir = String(values.out ?? join(repoRoot, "bench", "results"));
await Deno.mkdir(dir, { recursive: true });
const file = join(dir, `bench-${machine.date.replace(/[:.]/g, "-")}.json`);
await Deno.writeTextFile(file, JSON.stringify({ machine, rows }, null, 2));
console.log(`results: ${file}`);
Deno.exit(0);
