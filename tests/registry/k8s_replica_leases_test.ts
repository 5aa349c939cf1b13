/**
 * Replica leases as Kubernetes Leases against a real API server: replicas see each other, ignore a
 * dead replica's Lease (and remove it once long dead), see the draining mark, and drop a released one.
 */

import assert from "node:assert/strict";
import { startClusters } from "../cluster/cluster.ts";
import { repoRoot } from "../helpers/tower_procs.ts";

Deno.test("replica Leases in a real API server: live, stale, draining, released", async () => {
  const [c] = await startClusters(["leases"]);
  try {
    const child = c!.spawnInNetns([
      Deno.execPath(),
      "run",
      "-A",
      "--no-prompt",
      `${repoRoot}/tests/registry/_k8s_leases_probe.ts`,
      c!.adminKubeconfig,
    ], { stdout: "piped", stderr: "piped" });
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    const out = await child.output();
    clearTimeout(timer);
    const text = new TextDecoder().decode(out.stdout);
    const steps = Object.fromEntries(
      text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).map((s) => [s.step, s]),
    );
    assert.ok(steps.done, `probe did not finish:\n${text}\n${new TextDecoder().decode(out.stderr)}`);
    assert.deepEqual(steps.both.a.map((l: { id: string }) => l.id), ["hub-a", "hub-b"]);
    assert.deepEqual(
      steps.both.b.map((l: { id: string; peerAddress: string }) => [l.id, l.peerAddress]),
      [["hub-a", "10.0.0.1:8444"], ["hub-b", "10.0.0.2:8444"]],
    );
    assert.ok(!steps.cleaned.names.includes("tower-replica-gone-long"), JSON.stringify(steps.cleaned));
    assert.ok(
      steps.cleaned.names.includes("tower-replica-gone-now"),
      "a recently dead Lease is only ignored",
    );
    assert.equal(steps.draining.b, "hub-a(draining),hub-b");
    assert.equal(steps.released.b, "hub-b");
  } finally {
    await c!.stop();
  }
});
