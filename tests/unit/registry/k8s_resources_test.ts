/** Records to custom resources and back, and the Cluster status a replica writes: pure, table-tested. */

import assert from "node:assert/strict";
import {
  accessFromObject,
  accessSpec,
  clusterFromObject,
  clusterSpec,
  lbPortFromObject,
  lbPortName,
  lbPortSpec,
  newAccessName,
  userFromObject,
  userObjectName,
  userSpec,
} from "../../../lib/registry/k8s_resources.ts";
import { nextClusterStatus, prunedClusterStatus } from "../../../lib/registry/k8s_cluster_status.ts";
import { hashToken, newToken } from "../../../lib/registry/mod.ts";

const secretOf = (hash: string, rotatedAt?: string) => ({
  metadata: rotatedAt ? { annotations: { "tower.dev/token-rotated-at": rotatedAt } } : {},
  data: { tokenHash: btoa(hash) },
});

Deno.test("cluster records survive the trip through a Cluster object and its token Secret", () => {
  const hash = hashToken(newToken());
  for (
    const c of [
      { name: "a", tokenHash: hash, createdAt: "2026-01-01T00:00:00.000Z" },
      {
        name: "b",
        tokenHash: hash,
        createdAt: "2026-01-02T00:00:00.000Z",
        tokenRotatedAt: "2026-02-01T00:00:00.000Z",
        mode: "passthrough" as const,
        port: 9443,
        labels: { env: "prod", "example.com/team": "x" },
      },
    ]
  ) {
    const obj = {
      metadata: { name: c.name, annotations: { "tower.dev/created-at": c.createdAt } },
      spec: clusterSpec(c),
    };
    assert.ok(!JSON.stringify(obj).includes(hash), "no hash in the custom resource");
    assert.deepEqual(clusterFromObject(obj, secretOf(hash, c.tokenRotatedAt)), c);
  }
  // Applied with kubectl, no token yet: created at its creationTimestamp, no hash.
  assert.deepEqual(
    clusterFromObject(
      { metadata: { name: "w", creationTimestamp: "2026-03-01T00:00:00Z" }, spec: {} },
      undefined,
    ),
    { name: "w", tokenHash: "", createdAt: "2026-03-01T00:00:00.000Z" },
  );
});

Deno.test("user records: names that are no object name get a hashed object name and spec.name", () => {
  assert.equal(userObjectName("alice"), "alice");
  assert.equal(userObjectName("alice.example.com"), "alice.example.com");
  for (const odd of ["Alice", "system:admin", "a b", "x".repeat(201), "-a"]) {
    assert.match(userObjectName(odd), /^u-[0-9a-f]{32}$/);
  }
  assert.notEqual(userObjectName("Alice"), userObjectName("alice@x"));
  const hash = hashToken(newToken());
  const u = {
    name: "Alice@Example",
    groups: ["devs"],
    tokenHash: hash,
    extra: { scopes: ["a", "b"] },
    createdAt: "2026-01-01T00:00:00.000Z",
  };
  const obj = {
    metadata: { name: userObjectName(u.name), annotations: { "tower.dev/created-at": u.createdAt } },
    spec: userSpec(u),
  };
  assert.deepEqual(userFromObject(obj, secretOf(hash)), u);
  // kubectl-applied with only metadata.name and groups.
  assert.deepEqual(
    userFromObject({
      metadata: { name: "bob", creationTimestamp: "2026-01-01T00:00:00Z" },
      spec: { groups: [] },
    }, undefined),
    { name: "bob", groups: [], createdAt: "2026-01-01T00:00:00.000Z" },
  );
});

Deno.test("access rules and LB ports round-trip; LB objects are named protocol-port; access names sort by time", () => {
  for (
    const r of [
      { users: ["a"], clusters: ["*"] },
      { groups: ["g"], clusterSelector: "env in (prod)" },
      { users: ["a"], groups: ["g"], clusters: ["x-*"], clusterSelector: "!legacy" },
    ]
  ) assert.deepEqual(accessFromObject({ spec: accessSpec(r) }), r);
  const a = { cluster: "c", service: "ns/web", port: 80, protocol: "UDP" as const, publicPort: 30001 };
  assert.deepEqual(lbPortFromObject({ spec: lbPortSpec(a) }), a);
  assert.equal(lbPortName(a), "udp-30001");
  const names = [0, 1, 2, 10, 11].map((i) => newAccessName(i));
  assert.deepEqual([...names].sort(), names);
  for (const n of names) assert.match(n, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
});

Deno.test("Cluster status: per-replica entries, a sum, and a Connected condition that moves only on a flip", () => {
  const t0 = "2026-01-01T00:00:00.000Z", t1 = "2026-01-01T00:01:00.000Z", t2 = "2026-01-01T00:02:00.000Z";
  const s1 = nextClusterStatus(undefined, { replica: "hub-a", agents: 2, since: t0 }, t0);
  assert.equal(s1.connectedAgents, 2);
  const s2 = nextClusterStatus(s1, { replica: "hub-b", agents: 1, since: t1 }, t1);
  assert.equal(s2.connectedAgents, 3);
  assert.deepEqual((s2.hubs as { replica: string }[]).map((h) => h.replica), ["hub-a", "hub-b"]);
  const cond = (s: Record<string, unknown>) =>
    (s.conditions as { type: string; status: string; lastTransitionTime: string }[]).find((c) =>
      c.type === "Connected"
    )!;
  assert.equal(cond(s2).status, "True");
  assert.equal(cond(s2).lastTransitionTime, t0, "still connected: no transition");
  const s3 = nextClusterStatus(s2, { replica: "hub-a", agents: 0 }, t2);
  const s4 = nextClusterStatus(s3, { replica: "hub-b", agents: 0 }, t2);
  assert.equal(s4.connectedAgents, 0);
  assert.deepEqual(s4.hubs, []);
  assert.equal(cond(s4).status, "False");
  assert.equal(cond(s4).lastTransitionTime, t2);
  // The same report again changes nothing (so the writer skips the write).
  assert.deepEqual(nextClusterStatus(s4, { replica: "hub-a", agents: 0 }, "2027-01-01T00:00:00.000Z"), s4);
});

Deno.test("Cluster status: entries of gone replicas are pruned with the sum and condition to match", () => {
  const t0 = "2026-01-01T00:00:00.000Z", t1 = "2026-01-01T00:01:00.000Z";
  const s1 = nextClusterStatus(undefined, { replica: "hub-a", agents: 2, since: t0 }, t0);
  const s2 = nextClusterStatus(s1, { replica: "hub-b", agents: 1, since: t0 }, t0);
  assert.equal(prunedClusterStatus(s2, () => false, t1), undefined, "nothing gone: no write");
  const s3 = prunedClusterStatus(s2, (h) => h.replica === "hub-a", t1)!;
  assert.deepEqual(s3.hubs, [{ replica: "hub-b", agents: 1, since: t0 }]);
  assert.equal(s3.connectedAgents, 1);
  const s4 = prunedClusterStatus(s3, () => true, t1)!;
  assert.equal(s4.connectedAgents, 0);
  const cond = (s4.conditions as { type: string; status: string; lastTransitionTime: string }[])[0]!;
  assert.deepEqual([cond.type, cond.status, cond.lastTransitionTime], ["Connected", "False", t1]);
  assert.equal(prunedClusterStatus(undefined, () => true, t1), undefined);
});
