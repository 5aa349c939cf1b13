/**
 * Load generator for the Kubernetes proxy benchmarks, run inside a cluster's network namespace so the
 * direct path and the hub path start from the same place. Reads a JSON job file, prints a JSON result.
 *
 *   deno run -A bench/kube_load.ts JOB.json
 * @module
 */

import https from "node:https";
import { Buffer } from "node:buffer";
import { percentile } from "./_util.ts";

/** One target: base URL and credentials. */
export interface Target {
  base: string;
  ca: string;
  cert?: string;
  key?: string;
  token?: string;
  /** Extra request headers (e.g. Impersonate-User, as the agent sends them). */
  headers?: Record<string, string>;
}

/** A job for this generator. */
export type Job =
  | { mode: "seed"; target: Target; namespace: string; count: number; sizeBytes: number }
  | { mode: "latency"; target: Target; path: string; concurrency: number; seconds: number }
  | { mode: "list"; target: Target; path: string; repeat: number }
  | { mode: "watch"; target: Target; namespace: string; name: string; updates: number };

function client(t: Target, concurrency = 64) {
  const url = new URL(t.base);
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: concurrency,
    ca: t.ca,
    cert: t.cert,
    key: t.key,
  });
  const prefix = url.pathname.replace(/\/$/, "");
  const request = (method: string, path: string, body?: unknown, onChunk?: (c: Buffer) => void) =>
    new Promise<{ status: number; body: string; at: number }>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = https.request({
        host: url.hostname,
        port: Number(url.port || 443),
        method,
        path: prefix + path,
        agent,
        headers: {
          accept: "application/json",
          ...t.headers,
          ...(t.token ? { authorization: `Bearer ${t.token}` } : {}),
          ...(payload
            ? {
              "content-type": method === "PATCH" ? "application/merge-patch+json" : "application/json",
              "content-length": Buffer.byteLength(payload),
            }
            : {}),
        },
      }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (c: Buffer) => (onChunk ? onChunk(c) : parts.push(c)));
        res.on(
          "end",
          () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(parts).toString(),
              at: performance.now(),
            }),
        );
        res.on("error", reject);
      });
      req.on("error", reject);
      req.setNoDelay?.(true);
      req.end(payload);
    });
  return { request, close: () => agent.destroy() };
}

async function run(job: Job): Promise<Record<string, unknown>> {
  const c = client(job.target, job.mode === "latency" ? job.concurrency : 64);
  try {
    switch (job.mode) {
      case "seed": {
        await c.request("POST", "/api/v1/namespaces", { metadata: { name: job.namespace } });
        const data = "x".repeat(job.sizeBytes);
        let next = 0;
        await Promise.all(Array.from({ length: 16 }, async () => {
          while (next < job.count) {
            const i = next++;
            const r = await c.request("POST", `/api/v1/namespaces/${job.namespace}/configmaps`, {
              metadata: { name: `cm-${i}` },
              data: { payload: data },
            });
            if (r.status !== 201 && r.status !== 409) {
              throw new Error(`seed: HTTP ${r.status} ${r.body.slice(0, 200)}`);
            }
          }
        }));
        return { created: job.count };
      }
      case "latency": {
        const times: number[] = [];
        let errors = 0;
        const deadline = performance.now() + job.seconds * 1000;
        await c.request("GET", job.path); // warm the connection pool
        const t0 = performance.now();
        await Promise.all(Array.from({ length: job.concurrency }, async () => {
          while (performance.now() < deadline) {
            const start = performance.now();
            const r = await c.request("GET", job.path);
            if (r.status !== 200) errors++;
            times.push(r.at - start);
          }
        }));
        const elapsed = performance.now() - t0;
        times.sort((a, b) => a - b);
        return {
          requests: times.length,
          errors,
          p50ms: percentile(times, 50),
          p99ms: percentile(times, 99),
          rps: times.length / (elapsed / 1000),
        };
      }
      case "list": {
        const times: number[] = [];
        let bytes = 0;
        for (let i = 0; i < job.repeat; i++) {
          const start = performance.now();
          const r = await c.request("GET", job.path);
          if (r.status !== 200) throw new Error(`list: HTTP ${r.status}`);
          bytes = r.body.length;
          times.push(r.at - start);
        }
        times.sort((a, b) => a - b);
        return { medianMs: percentile(times, 50), bytes };
      }
      case "watch": {
        const base = `/api/v1/namespaces/${job.namespace}/configmaps`;
        await c.request("POST", base, { metadata: { name: job.name }, data: { n: "0" } });
        const current = JSON.parse((await c.request("GET", `${base}/${job.name}`)).body);
        const seen = new Map<string, number>();
        let waiters: (() => void)[] = [];
        let pending = "";
        const watch = c.request(
          "GET",
          `${base}?watch=true&fieldSelector=metadata.name%3D${job.name}&resourceVersion=${current.metadata.resourceVersion}`,
          undefined,
          (chunk) => {
            const now = performance.now();
            pending += chunk.toString();
            let nl: number;
            while ((nl = pending.indexOf("\n")) >= 0) {
              const ev = JSON.parse(pending.slice(0, nl));
              pending = pending.slice(nl + 1);
              seen.set(ev.object?.metadata?.resourceVersion, now);
              for (const w of waiters) w();
              waiters = [];
            }
          },
        );
        void watch.catch(() => {});
        await new Promise((r) => setTimeout(r, 200));
        const lags: number[] = [];
        for (let i = 1; i <= job.updates; i++) {
          const r = await c.request("PATCH", `${base}/${job.name}`, { data: { n: String(i) } });
          const rv = JSON.parse(r.body).metadata.resourceVersion;
          while (!seen.has(rv)) await new Promise<void>((w) => waiters.push(w));
          lags.push(seen.get(rv)! - r.at);
        }
        lags.sort((a, b) => a - b);
        return { updates: lags.length, p50ms: percentile(lags, 50), p99ms: percentile(lags, 99) };
      }
    }
  } finally {
    c.close();
  }
}

if (import.meta.main) {
  const job = JSON.parse(await Deno.readTextFile(Deno.args[0]!)) as Job;
  const result = await run(job);
  // deno-lint-ignore no-console
  console.log(JSON.stringify(result));
  Deno.exit(0);
}
