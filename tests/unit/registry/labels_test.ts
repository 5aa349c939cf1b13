/** Cluster labels: key and value syntax, `k=v`/`k-` edits, the label-count bound, and registry validation. @module */

import assert from "node:assert/strict";
import {
  applyLabelEdits,
  hashToken,
  labelKeyProblem,
  labelsProblem,
  labelValueProblem,
  maxLabels,
  parseLabelEdit,
  validateRegistry,
} from "../../../lib/registry/mod.ts";

Deno.test("label keys and values follow Kubernetes' syntax", () => {
  for (const k of ["env", "a", "A.b-c_d", "example.com/team", "x".repeat(63), `${"a".repeat(253)}/n`]) {
    assert.equal(labelKeyProblem(k), undefined, k);
  }
  for (const k of ["", "-a", "a-", "x".repeat(64), "Ex.com/a", "/a", "a/", "a b", `${"a".repeat(254)}/n`]) {
    assert.ok(labelKeyProblem(k), k);
  }
  for (const v of ["", "prod", "v1.2_3-x", "x".repeat(63)]) assert.equal(labelValueProblem(v), undefined, v);
  for (const v of ["-x", "x.", "x".repeat(64), "a/b", "a b"]) assert.ok(labelValueProblem(v), v);
});

Deno.test("parseLabelEdit takes KEY=VALUE, and KEY- only where removal is allowed", () => {
  assert.deepEqual(parseLabelEdit("env=prod", false), { key: "env", value: "prod" });
  assert.deepEqual(parseLabelEdit("env=", false), { key: "env", value: "" });
  assert.deepEqual(parseLabelEdit("env-", true), { key: "env", remove: true });
  assert.throws(() => parseLabelEdit("env-", false), /must be KEY=VALUE/);
  assert.throws(() => parseLabelEdit("env", true), /must be KEY=VALUE or KEY- \(to remove it\)/);
  assert.throws(() => parseLabelEdit("env=a b", true), /label value 'a b'/);
  assert.throws(() => parseLabelEdit("-=x", true), /label key '-'/);
  assert.deepEqual(
    applyLabelEdits({ env: "dev", tier: "web" }, [
      { key: "env", value: "prod" },
      { key: "tier", remove: true },
      { key: "region", value: "eu" },
    ]),
    { env: "prod", region: "eu" },
  );
});

Deno.test("a cluster carries at most maxLabels labels", () => {
  const labels = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
  assert.equal(labelsProblem(labels(maxLabels)), undefined);
  assert.match(labelsProblem(labels(maxLabels + 1))!, /at most 64 labels, got 65/);
  assert.match(labelsProblem({ env: 3 })!, /must have a string value/);
  assert.match(labelsProblem(["env"])!, /must map keys/);
});

Deno.test("the registry keeps cluster labels and access selectors, and names the bad field", () => {
  const base = { name: "prod", tokenHash: hashToken("t"), createdAt: "x" };
  const data = validateRegistry({
    clusters: [{ ...base, labels: { env: "prod" } }],
    access: [{ groups: ["sre"], clusterSelector: "env in (prod,staging)" }, {
      users: ["a"],
      clusters: ["*"],
    }],
  }, "reg.yaml");
  assert.deepEqual(data.clusters[0]!.labels, { env: "prod" });
  assert.deepEqual(data.access, [
    { groups: ["sre"], clusterSelector: "env in (prod,staging)" },
    { users: ["a"], clusters: ["*"] },
  ]);
  const bad: [unknown, RegExp][] = [
    [{ clusters: [{ ...base, labels: { "-x": "y" } }] }, /clusters\[0\]\.labels of 'prod': label key '-x'/],
    [
      { access: [{ groups: ["g"], clusterSelector: "env in prod" }] },
      /access\[0\]: cluster selector 'env in prod'/,
    ],
    [
      { access: [{ groups: ["g"], clusterSelector: " " }] },
      /access\[0\]\.clusterSelector must be a non-empty/,
    ],
    [{ access: [{ groups: ["g"] }] }, /access\[0\] needs clusters \(name globs\) or a clusterSelector/],
  ];
  for (const [raw, want] of bad) assert.throws(() => validateRegistry(raw, "reg.yaml"), want);
});
