/**
 * Several hub replicas behind HAProxy, sharing one data dir (registry, host key, CA, replica leases):
 * agents keep tunnels to `--hub-connections` distinct replicas, get them back after a replica is
 * killed, and hold one per replica when there are fewer replicas than they ask for.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  addCluster,
  type HubProcess,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { echoServer, freePort, patternChunk, roundTrip } from "../helpers/net_servers.ts";
import { startHaproxy } from "../helpers/haproxy.ts";

/** Replica ids an agent holds a tunnel to right now, from its own log. */
function heldReplicas(agent: TowerProcess): Set<string> {
  const held = new Map<string, number>();
  for (const l of agent.lines) {
    const r = String(l.replica ?? "");
    if (l.msg === "connected to hub") held.set(r, (held.get(r) ?? 0) + 1);
    if (l.msg === "disconnected from hub") held.set(r, (held.get(r) ?? 0) - 1);
  }
  return new Set([...held].filter(([, n]) => n > 0).map(([r]) => r));
}

/** Waits until the agent holds exactly `n` tunnels, to distinct replicas. */
async function waitHolding(agent: TowerProcess, n: number, timeoutMs: number): Promise<Set<string>> {
  await agent.waitFor(() => heldReplicas(agent).size === n, `${n} tunnels to distinct replicas`, timeoutMs);
  return heldReplicas(agent);
}

/** Replica id each hub logs with. */
function replicaOf(hub: HubProcess): string {
  return String(hub.lines.find((l) => l.msg === "hub listening")?.replica);
}

Deno.test("agents keep tunnels to K distinct replicas behind HAProxy, and get them back after a kill -9", async () => {
  const dataDir = await scratchDir("replicas");
  const cluster = await addCluster(dataDir, "alpha");
  const echo = await echoServer();
  const fwd = [await freePort(), await freePort(), await freePort()];
  const hubs: HubProcess[] = [];
  const agents: TowerProcess[] = [];
  let lb: Awaited<ReturnType<typeof startHaproxy>> | undefined;
  try {
    // The first hub creates the serving certificate; the others then load it from the shared data dir.
    for (let i = 0; i < 3; i++) {
      hubs.push(await startHub({ dataDir, args: ["--forward", `127.0.0.1:${fwd[i]}=alpha/echo`] }));
    }
    await Promise.all(
      hubs.map((h) =>
        h.waitFor(
          (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 3,
          "3 replicas",
          40_000,
        )
      ),
    );
    lb = await startHaproxy({ backends: hubs.map((h) => h.port), tls: true });
    const base = {
      hubUrl: `wss://127.0.0.1:${lb.port}/tunnel`,
      cluster: "alpha",
      token: cluster.token,
      fingerprint: cluster.fingerprint,
      caFile: cluster.caFile,
      publish: [`echo=127.0.0.1:${echo.port}`],
    };
    // Default --hub-connections (2), and one asking for more replicas than there are.
    agents.push(startAgent({ ...base, name: "agent-k2", args: ["--backoff-max", "2s"] }));
    agents.push(
      startAgent({ ...base, name: "agent-k5", args: ["--backoff-max", "2s", "--hub-connections", "5"] }),
    );
    const [k2, k5] = agents as [TowerProcess, TowerProcess];
    const held = await waitHolding(k2, 2, 60_000);
    assert.equal((await waitHolding(k5, 3, 60_000)).size, 3);
    const ids = hubs.map(replicaOf);
    for (const r of held) assert.ok(ids.includes(r), `${r} is not one of ${ids}`);
    // Status is the same from any replica: each gathers every live replica's agents over the admin
    // sockets in the shared data dir, and `cluster list` asks whichever answers.
    const listed = await serverCommand(["cluster", "list", "--data-dir", dataDir]);
    assert.match(listed.stdout, /^alpha\s+5\s/m, listed.stdout);

    // Every replica serves the endpoint through a tunnel of its own, or through no agent at all.
    for (let i = 0; i < 3; i++) {
      const data = patternChunk(40 + i, 20_000);
      assert.equal(Buffer.compare(await roundTrip(fwd[i]!, data), data), 0, `replica ${ids[i]}`);
    }

    // kill -9 one replica the K=2 agent holds: it notices at once and holds 2 distinct ones again.
    const victim = hubs.find((h) => held.has(replicaOf(h)))!;
    const from = k2.lines.length;
    const killedAt = performance.now();
    await victim.stop("SIGKILL");
    await k2.waitFor((l) => l.msg === "disconnected from hub", "the kill noticed", 5000, from);
    await k2.waitFor(
      (l) => l.msg === "connected to hub" && l.replica !== replicaOf(victim),
      "a replacement tunnel",
      15_000,
      from,
    );
    const after = heldReplicas(k2);
    assert.equal(after.size, 2, JSON.stringify([...after]));
    assert.ok(!after.has(replicaOf(victim)));
    const regainedMs = performance.now() - killedAt;
    assert.ok(regainedMs < 15_000, `2 tunnels again after ${regainedMs} ms`);
    // The agent that wanted 5 holds one tunnel per live replica; dials that land on a replica it
    // already holds are dropped until the dead replica's lease lapses and the count drops to 2.
    await k5.waitFor((l) => l.msg === "replica count changed" && l.replicas === 2, "2 replicas", 40_000);
    assert.equal(heldReplicas(k5).size, 2);
    assert.ok(k5.count("duplicate tunnel parked") > 0, "no dial of k5 landed on a held replica");
  } finally {
    for (const a of agents) await a.stop();
    await lb?.stop();
    for (const h of hubs) await h.stop();
    await echo.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

/** GET on a hub (TLS verified against the hub CA); the status code. */
async function statusOf(port: number, path: string, ca: string, headers: Record<string, string> = {}) {
  const https = await import("node:https");
  return await new Promise<number>((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path, ca, headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

Deno.test("SIGTERM drains a replica: not ready, no new tunnels, its agents move to another replica, exit 0", async () => {
  const dataDir = await scratchDir("replicas");
  const cluster = await addCluster(dataDir, "alpha");
  const ca = await Deno.readTextFile(cluster.caFile);
  const echo = await echoServer();
  const hubs: HubProcess[] = [];
  const agents: TowerProcess[] = [];
  let lb: Awaited<ReturnType<typeof startHaproxy>> | undefined;
  try {
    for (let i = 0; i < 3; i++) hubs.push(await startHub({ dataDir, args: ["--drain-timeout", "10s"] }));
    await Promise.all(
      hubs.map((h) =>
        h.waitFor(
          (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 3,
          "3 replicas",
          40_000,
        )
      ),
    );
    lb = await startHaproxy({ backends: hubs.map((h) => h.port), tls: true });
    for (let i = 0; i < 3; i++) {
      agents.push(startAgent({
        hubUrl: `wss://127.0.0.1:${lb.port}/tunnel`,
        cluster: "alpha",
        token: cluster.token,
        fingerprint: cluster.fingerprint,
        caFile: cluster.caFile,
        publish: [`echo=127.0.0.1:${echo.port}`],
        name: `agent-${i}`,
        args: ["--backoff-max", "2s"],
      }));
    }
    for (const a of agents) await waitHolding(a, 2, 60_000);
    // Drain the replica holding the most tunnels.
    const holders = (h: HubProcess) => agents.filter((a) => heldReplicas(a).has(replicaOf(h))).length;
    const victim = [...hubs].sort((a, b) => holders(b) - holders(a))[0]!;
    const moving = agents.filter((a) => heldReplicas(a).has(replicaOf(victim)));
    const from = moving.map((a) => a.lines.length);
    victim.signal("SIGTERM");
    const draining = await victim.waitForMsg("hub draining", 5000);
    assert.equal(draining.others, true);
    assert.equal(draining.agentsToMove, moving.length);
    assert.equal(await statusOf(victim.port, "/readyz", ca), 503, "a draining replica is not ready");
    assert.equal(
      await statusOf(victim.port, "/tunnel", ca, {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-protocol": "tower-tunnel.v1",
      }),
      503,
      "a draining replica takes no new tunnel",
    );
    // Each agent it held is asked to move, gets a tunnel to another replica, and keeps 2.
    for (const [i, a] of moving.entries()) {
      await a.waitFor((l) => l.msg === "hub asked for a reconnect", "the reconnect request", 10_000, from[i]);
      await a.waitFor(
        (l) => l.msg === "connected to hub" && l.replica !== replicaOf(victim),
        "a tunnel elsewhere",
        20_000,
        from[i],
      );
    }
    const asked = moving.map((a, i) =>
      Date.parse(String(a.lines.slice(from[i]).find((l) => l.msg === "hub asked for a reconnect")!.time))
    );
    if (asked.length > 1) assert.ok(new Set(asked).size > 1, `reconnect requests not staggered: ${asked}`);
    const status = await victim.exited;
    assert.equal(status.code, 0, victim.dump());
    const drained = victim.lines.find((l) => l.msg === "hub drained")!;
    assert.equal(drained.timedOut, false, JSON.stringify(drained));
    for (const a of agents) {
      const held = await waitHolding(a, 2, 40_000);
      assert.ok(!held.has(replicaOf(victim)), `${a.name} still holds the drained replica`);
    }
  } finally {
    for (const a of agents) await a.stop();
    await lb?.stop();
    for (const h of hubs) await h.stop();
    await echo.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
