/** The status page's memory: per-cluster rates over 15 minutes in fixed buckets, and at most 50 refusals. */

import assert from "node:assert/strict";
import { bucketCount, bucketMs, maxRefusals, StatusHistory } from "../../../lib/server/status_history.ts";
import type { AuditEntry } from "../../../lib/server/audit.ts";

function entry(status: number, viaAgent = true): AuditEntry {
  const agent = viaAgent ? "a#1" : undefined;
  return {
    user: "u",
    groups: [],
    cluster: "alpha",
    method: "GET",
    verb: "get",
    path: "/api",
    status,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 1,
    agent,
    ...(agent ? {} : { error: "refused by the hub" }),
  };
}

Deno.test("StatusHistory: requests and errors land in the current 10 s bucket as per-second rates", () => {
  let now = 1_000_000 * bucketMs;
  const h = new StatusHistory(() => now);
  for (let i = 0; i < 30; i++) h.request(entry(200), "alpha");
  for (let i = 0; i < 5; i++) h.request(entry(503), "alpha");
  h.request(entry(0), "alpha");
  const r = h.rates("alpha");
  assert.equal(r.requests.length, bucketCount);
  assert.equal(r.requests.at(-1), 3.6);
  assert.equal(r.errors.at(-1), 0.6);
  assert.equal(r.requests.slice(0, -1).reduce((a, b) => a + b, 0), 0);
  // A bucket later the count moves left; the new bucket starts empty.
  now += bucketMs;
  const later = h.rates("alpha");
  assert.equal(later.requests.at(-2), 3.6);
  assert.equal(later.requests.at(-1), 0);
  assert.equal(later.now.requests, 3.6, "right after the boundary the last 10 s still hold them all");
  now += bucketMs / 4;
  assert.ok(
    Math.abs(h.rates("alpha").now.requests - 2.7) < 1e-9,
    "three quarters of the previous bucket still count",
  );
  assert.equal(later.from, r.from + bucketMs);
  assert.deepEqual(h.rates("nobody").requests, new Array(bucketCount).fill(0));
});

Deno.test("StatusHistory: after 15 quiet minutes (or much longer) nothing old remains", () => {
  let now = 5_000 * bucketMs;
  const h = new StatusHistory(() => now);
  h.request(entry(200), "alpha");
  now += (bucketCount - 1) * bucketMs;
  assert.equal(h.rates("alpha").requests[0], 0.1, "still in the window");
  now += bucketMs;
  assert.equal(h.rates("alpha").requests.reduce((a, b) => a + b, 0), 0);
  h.request(entry(200), "alpha");
  now += 1_000_000 * bucketMs;
  assert.equal(h.rates("alpha").requests.reduce((a, b) => a + b, 0), 0);
});

Deno.test("StatusHistory: the hub's own refusals are kept, newest first, at most 50, reasons cut short", () => {
  const h = new StatusHistory();
  h.request(entry(403), "alpha"); // the cluster said no: not the hub's refusal
  assert.equal(h.refusals().length, 0);
  for (let i = 0; i < maxRefusals + 20; i++) {
    h.refused({ what: "agent", cluster: "alpha", code: 0, user: null, reason: `r${i} ${"x".repeat(500)}` });
  }
  h.request(entry(401, false), "alpha");
  const list = h.refusals();
  assert.equal(list.length, maxRefusals);
  assert.equal(list[0]!.what, "request");
  assert.equal(list[0]!.code, 401);
  assert.equal(list[0]!.reason, "refused by the hub");
  assert.ok(list[1]!.reason.startsWith(`r${maxRefusals + 19} `));
  assert.ok(list.every((r) => r.reason.length <= 200));
});
