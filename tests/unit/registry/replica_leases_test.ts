/** File replica leases: renewed, expired ones ignored and eventually removed, released at once. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FileReplicaLeases, isPeerAddress } from "../../../lib/registry/mod.ts";
import { logger } from "../../../lib/log/log.ts";
import { scratchDir } from "../../helpers/tower_procs.ts";

const log = logger({ component: "leases-test" });

/** Waits (at most 5 s) until `leases` sees exactly `ids` as live. */
function seesLive(leases: FileReplicaLeases, ids: string[]): Promise<void> {
  const now = () => leases.live().map((l) => l.id).join(",");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`live is ${now()}, not ${ids}`)), 5000);
    const check = () => {
      if (now() !== ids.join(",")) return;
      clearTimeout(timer);
      resolve();
    };
    leases.onChange(check);
    check();
  });
}

Deno.test("replicas see each other's leases, ignore expired and malformed ones, and drop a released one", async () => {
  const dir = await scratchDir("leases");
  const a = new FileReplicaLeases({ dir, ttlMs: 300, log });
  const b = new FileReplicaLeases({ dir, ttlMs: 300, log });
  try {
    // A replica that died long ago, one that died just now, and files that are not leases.
    const now = Date.now();
    await Deno.writeTextFile(
      join(dir, "gone-long.json"),
      JSON.stringify({ id: "gone-long", renewedAt: now - 60_000, ttlMs: 300 }),
    );
    await Deno.writeTextFile(
      join(dir, "gone-now.json"),
      JSON.stringify({ id: "gone-now", renewedAt: now - 400, ttlMs: 300 }),
    );
    await Deno.writeTextFile(
      join(dir, "bad-id.json"),
      JSON.stringify({ id: "Bad_ID", renewedAt: now, ttlMs: 300 }),
    );
    await Deno.writeTextFile(
      join(dir, "huge.json"),
      JSON.stringify({ id: "huge", renewedAt: now, ttlMs: 300, pad: "x".repeat(5000) }),
    );
    await Deno.writeTextFile(join(dir, "torn.json"), '{"id": "to');

    const seen: string[][] = [];
    b.onChange((live) => seen.push(live.map((l) => l.id)));
    await a.hold("hub-a");
    await b.hold("hub-b");
    assert.deepEqual(b.live().map((l) => l.id), ["hub-a", "hub-b"]);
    await seesLive(a, ["hub-a", "hub-b"]);
    // Long-expired leases are cleaned up by a live replica; a recent one is only ignored.
    await assert.rejects(Deno.stat(join(dir, "gone-long.json")), Deno.errors.NotFound);
    await Deno.stat(join(dir, "gone-now.json"));

    await a.release();
    await assert.rejects(Deno.stat(join(dir, "hub-a.json")), Deno.errors.NotFound);
    await seesLive(b, ["hub-b"]);
    assert.deepEqual(seen.at(-1), ["hub-b"]);
  } finally {
    await a.release();
    await b.release();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a lease carries the peer address and the draining mark; addresses are checked when read", async () => {
  const dir = await scratchDir("leases");
  const a = new FileReplicaLeases({ dir, ttlMs: 300, log });
  try {
    await Deno.writeTextFile(
      join(dir, "odd-peer.json"),
      JSON.stringify({ id: "odd-peer", renewedAt: Date.now(), ttlMs: 60_000, peerAddress: "x y:1" }),
    );
    await Deno.writeTextFile(
      join(dir, "future.json"),
      JSON.stringify({ id: "future", renewedAt: Date.now() + 60_000, ttlMs: 300 }),
    );
    await Deno.writeTextFile(
      join(dir, "endless.json"),
      JSON.stringify({ id: "endless", renewedAt: Date.now(), ttlMs: 600_001 }),
    );
    await a.hold("hub-a", "10.0.0.7:8444");
    assert.deepEqual(a.live().map((l) => [l.id, l.peerAddress, l.draining]), [[
      "hub-a",
      "10.0.0.7:8444",
      undefined,
    ]]);
    await a.setDraining();
    assert.deepEqual(a.live().map((l) => [l.id, l.draining]), [["hub-a", true]]);
  } finally {
    await a.release();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("peer addresses: HOST:PORT with a name, IPv4 or bracketed IPv6, port below 65536", () => {
  for (const ok of ["hub-0.tower.svc:8444", "10.0.0.7:1", "[fd00::7]:8444", "localhost:65535"]) {
    assert.ok(isPeerAddress(ok), ok);
  }
  for (
    const bad of ["hub-0", ":8444", "10.0.0.7:65536", "fd00::7:8444", "a b:1", `${"a".repeat(260)}:1`, 8444]
  ) {
    assert.ok(!isPeerAddress(bad), String(bad));
  }
});
