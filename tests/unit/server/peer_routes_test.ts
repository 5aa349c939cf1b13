/**
 * The held-clusters lookup a drain uses ({@link PeerRoutes.clustersHeld}): one request per live peer over
 * the mutual-TLS peer link, answers of draining peers and of a replica other than the lease names left
 * out, and the answer's size bounded.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createCa } from "../../../lib/server/tls_material.ts";
import { peerIdentity, type PeerListener, startPeerListener } from "../../../lib/server/peer_link.ts";
import { type HeldAnswer, heldClustersPath, PeerRoutes } from "../../../lib/server/peer_routes.ts";
import type { ReplicaLease } from "../../../lib/registry/mod.ts";
import { logger } from "../../../lib/log/log.ts";

const log = logger({ component: "test" });

/** A peer listener for replica `id` that answers held-clusters lookups with `body(id)`; counts them. */
async function peer(
  ca: Awaited<ReturnType<typeof createCa>>,
  id: string,
  body: string,
): Promise<{ listener: PeerListener; asked: () => number }> {
  let asked = 0;
  const listener = await startPeerListener({
    host: "127.0.0.1",
    port: 0,
    identity: await peerIdentity(ca, id),
    isLivePeer: () => true,
    log,
  });
  listener.route((req, res) => {
    if (req.url !== heldClustersPath) return false;
    asked++;
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
    return true;
  });
  return { listener, asked: () => asked };
}

const answer = (a: HeldAnswer) => JSON.stringify(a);

/** The bound under test (the default, 16 MiB, works the same way but is slow to send in a test). */
const maxHeldAnswerBytes = 64 << 10;

Deno.test("clustersHeld: one lookup per peer; draining peers, impostors and oversized answers hold nothing", async () => {
  const ca = await createCa("peer test CA");
  // Exactly at the bound (JSON may end in blanks): read. One byte past it: refused.
  const atBound = answer({ replica: "p-bound", clusters: ["at-bound"], draining: false });
  const peers = await Promise.all([
    peer(ca, "p-one", answer({ replica: "p-one", clusters: ["alpha", "beta"], draining: false })),
    peer(ca, "p-draining", answer({ replica: "p-draining", clusters: ["gamma"], draining: true })),
    peer(ca, "p-liar", answer({ replica: "p-one", clusters: ["delta"], draining: false })),
    peer(ca, "p-bound", atBound + " ".repeat(maxHeldAnswerBytes - atBound.length)),
    peer(
      ca,
      "p-over",
      answer({ replica: "p-over", clusters: ["over"], draining: false }) + " ".repeat(maxHeldAnswerBytes),
    ),
    peer(ca, "p-garbage", JSON.stringify({ replica: "p-garbage", clusters: [1, 2], draining: false })),
  ]);
  const ids = ["p-one", "p-draining", "p-liar", "p-bound", "p-over", "p-garbage"];
  try {
    const leases: ReplicaLease[] = peers.map((p, i) => ({
      id: ids[i]!,
      renewedAt: Date.now(),
      ttlMs: 15_000,
      peerAddress: `127.0.0.1:${p.listener.port}`,
    }));
    const routes = new PeerRoutes({
      identity: await peerIdentity(ca, "asker"),
      peers: () => leases,
      maxHeldAnswerBytes,
      log,
    });
    const held = await routes.clustersHeld();
    assert.deepEqual([...held].sort(), ["alpha", "at-bound", "beta"]);
    assert.deepEqual(peers.map((p) => p.asked()), [1, 1, 1, 1, 1, 1]);
  } finally {
    await Promise.all(peers.map((p) => p.listener.close()));
  }
});
