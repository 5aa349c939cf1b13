/**
 * The peer link between hub replicas (two hub processes sharing a data dir): only a certificate from the
 * peer CA naming a live replica gets in. A user's client certificate from the hub CA — the credential a
 * user can obtain — fails the TLS handshake. Route lookups answer from the replica's own sessions.
 */

import assert from "node:assert/strict";
import https from "node:https";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import YAML from "yaml";
import {
  addCluster,
  type HubProcess,
  replicaOf,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { echoServer, freePort, patternChunk, roundTrip } from "../helpers/net_servers.ts";
import { parseSamples, sampleSum } from "../helpers/metrics_text.ts";
import { peerClientTls, type PeerIdentity, peerIdentity } from "../../lib/server/peer_link.ts";

/** GET on a peer port with the given TLS options: status and body, or the connection error. */
function peerGet(
  port: number,
  path: string,
  tls: https.RequestOptions,
): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = https.request({ host: "127.0.0.1", port, path, agent: false, ...tls }, (res) => {
      let body = "";
      res.on("data", (c: Uint8Array) => (body += new TextDecoder().decode(c)));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", (e) => resolve({ error: e.message }));
    req.end();
  });
}

function peerPort(hub: HubProcess): number {
  const line = hub.lines.find((l) => l.msg === "peer link listening");
  return Number(String(line?.listen).split(":").pop());
}

Deno.test("peer link: a user's hub-CA certificate is refused, only a live replica's peer certificate gets in", async () => {
  const dataDir = await scratchDir("peers");
  const cluster = await addCluster(dataDir, "alpha");
  const echo = await echoServer();
  const hubs: HubProcess[] = [];
  let agent: TowerProcess | undefined;
  try {
    for (let i = 0; i < 2; i++) {
      hubs.push(await startHub({ dataDir, args: ["--peer-listen", "127.0.0.1:0"] }));
    }
    const [a, b] = hubs as [HubProcess, HubProcess];
    await Promise.all(
      hubs.map((h) =>
        h.waitFor(
          (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 2,
          "2 replicas",
          40_000,
        )
      ),
    );
    agent = startAgent({
      hubUrl: a.url,
      cluster: "alpha",
      token: cluster.token,
      fingerprint: cluster.fingerprint,
      caFile: cluster.caFile,
      publish: [`echo=127.0.0.1:${echo.port}`],
    });
    await agent.waitForMsg("connected to hub");

    // The credential a user can get: a client certificate from the hub CA.
    const added = await serverCommand(["user", "add", "mallory", "--data-dir", dataDir]);
    assert.equal(added.code, 0, added.stderr);
    const allowed = await serverCommand([
      "access",
      "allow",
      "--user",
      "mallory",
      "--clusters",
      "*",
      "--data-dir",
      dataDir,
    ]);
    assert.equal(allowed.code, 0, allowed.stderr);
    const kc = YAML.parse(
      (await serverCommand(["kubeconfig", "--user", "mallory", "--data-dir", dataDir])).stdout,
    ) as { users: { user: Record<string, string> }[] };
    const b64 = (v: string | undefined) => Buffer.from(v ?? "", "base64").toString();
    const userCert = {
      cert: b64(kc.users[0]?.user["client-certificate-data"]),
      key: b64(kc.users[0]?.user["client-key-data"]),
    };
    const peerCa = {
      cert: await Deno.readTextFile(join(dataDir, "peer-ca.crt")),
      key: await Deno.readTextFile(join(dataDir, "peer-ca.key")),
    };
    const asA: PeerIdentity = await peerIdentity(peerCa, replicaOf(a));
    const lookup = `/peer/v1/routes?cluster=alpha&endpoint=echo`;

    const fromB = b.lines.length;
    const withUserCert = await peerGet(peerPort(b), lookup, {
      ...peerClientTls(asA, replicaOf(b)),
      ...userCert,
    });
    assert.ok("error" in withUserCert, `a user certificate got in: ${JSON.stringify(withUserCert)}`);
    await b.waitForMsg("peer handshake refused", 5000, fromB);

    const noCert = await peerGet(peerPort(b), lookup, { ca: peerCa.cert, servername: replicaOf(b) });
    assert.ok("error" in noCert, `no certificate got in: ${JSON.stringify(noCert)}`);

    // A certificate from the peer CA for a replica that holds no lease.
    const imposter = await peerIdentity(peerCa, "imposter");
    const refused = await peerGet(peerPort(b), lookup, peerClientTls(imposter, replicaOf(b)));
    assert.ok("status" in refused && refused.status === 403, JSON.stringify(refused));
    assert.match(refused.body, /holds no live lease/);

    // The dialing side checks the name too: B's certificate does not pass for A.
    const wrongName = await peerGet(peerPort(b), lookup, peerClientTls(asA, replicaOf(a)));
    assert.ok("error" in wrongName && /not '/.test(wrongName.error), JSON.stringify(wrongName));

    // A live replica asks: A holds the agent, B does not.
    const onA = await peerGet(
      peerPort(a),
      lookup,
      peerClientTls(await peerIdentity(peerCa, replicaOf(b)), replicaOf(a)),
    );
    assert.ok("status" in onA && onA.status === 200, JSON.stringify(onA));
    assert.deepEqual(JSON.parse(onA.body), {
      replica: replicaOf(a),
      cluster: "alpha",
      endpoint: "echo",
      agents: 1,
      draining: false,
    });
    const onB = await peerGet(peerPort(b), lookup, peerClientTls(asA, replicaOf(b)));
    assert.ok("status" in onB && onB.status === 200, JSON.stringify(onB));
    assert.equal(JSON.parse(onB.body).agents, 0);
    const bad = await peerGet(
      peerPort(b),
      "/peer/v1/routes?cluster=A_B&endpoint=echo",
      peerClientTls(asA, replicaOf(b)),
    );
    assert.ok("status" in bad && bad.status === 400, JSON.stringify(bad));

    // The held-clusters lookup (a drain asks it once per peer, whatever the cluster count): A serves
    // alpha, B nothing; through the same checks as a route lookup.
    const held = await peerGet(
      peerPort(a),
      "/peer/v1/held",
      peerClientTls(await peerIdentity(peerCa, replicaOf(b)), replicaOf(a)),
    );
    assert.ok("status" in held && held.status === 200, JSON.stringify(held));
    assert.deepEqual(JSON.parse(held.body), { replica: replicaOf(a), clusters: ["alpha"], draining: false });
    const heldB = await peerGet(peerPort(b), "/peer/v1/held", peerClientTls(asA, replicaOf(b)));
    assert.ok("status" in heldB && heldB.status === 200, JSON.stringify(heldB));
    assert.deepEqual(JSON.parse(heldB.body).clusters, []);
    const heldImposter = await peerGet(peerPort(b), "/peer/v1/held", peerClientTls(imposter, replicaOf(b)));
    assert.ok("status" in heldImposter && heldImposter.status === 403, JSON.stringify(heldImposter));
  } finally {
    await agent?.stop();
    for (const h of hubs) await h.stop();
    await echo.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("a forward on a replica without the agent is carried through the replica that holds it", async () => {
  const dataDir = await scratchDir("peers");
  const cluster = await addCluster(dataDir, "alpha");
  const echo = await echoServer();
  const fwd = await freePort();
  const hubs: HubProcess[] = [];
  let agent: TowerProcess | undefined;
  try {
    hubs.push(await startHub({ dataDir, args: ["--peer-listen", "127.0.0.1:0"] }));
    hubs.push(
      await startHub({
        dataDir,
        args: [
          "--peer-listen",
          "127.0.0.1:0",
          "--forward",
          `127.0.0.1:${fwd}=alpha/echo`,
          "--metrics-listen",
          "127.0.0.1:0",
        ],
      }),
    );
    const [a, b] = hubs as [HubProcess, HubProcess];
    const metricsAt = String((await b.waitForMsg("metrics listening")).listen);
    const peerForwards = async (result: string) => {
      const text = await (await fetch(`http://${metricsAt}/metrics`)).text();
      return sampleSum(parseSamples(text), "tower_peer_forwards_total", { result });
    };
    await Promise.all(
      hubs.map((h) =>
        h.waitFor(
          (l) => l.msg === "replicas changed" && (l.replicas as string[]).length === 2,
          "2 replicas",
          40_000,
        )
      ),
    );
    // The agent holds a tunnel to A only; B serves the forward.
    agent = startAgent({
      hubUrl: a.url,
      cluster: "alpha",
      token: cluster.token,
      fingerprint: cluster.fingerprint,
      caFile: cluster.caFile,
      publish: [`echo=127.0.0.1:${echo.port}`],
    });
    await agent.waitForMsg("connected to hub");
    const data = patternChunk(7, 20 * (1 << 20));
    assert.equal(Buffer.compare(await roundTrip(fwd, data), data), 0, "20 MiB through the peer hop");
    const relayed = await a.waitFor(
      (l) => l.msg === "peer channel relayed" && l.peer === replicaOf(b),
      "A relays B's channel",
    );
    assert.equal(relayed.cluster, "alpha");
    assert.equal(relayed.endpoint, "echo");
    assert.ok(Number(relayed.bytesOut) >= data.length, JSON.stringify(relayed));

    // Several at once, each on its own relayed channel.
    const many = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const d = patternChunk(100 + i, 50_000);
      return Buffer.compare(await roundTrip(fwd, d), d) === 0;
    }));
    assert.deepEqual(many, Array(10).fill(true));
    assert.equal(await peerForwards("ok"), 11, "B counts each channel it opened through A");
    assert.equal(await peerForwards("no_agent"), 0);

    // The agent goes away: B's forward refuses at once (A answers that it holds no agent), nothing hangs.
    await agent.stop();
    agent = undefined;
    await a.waitForMsg("agent disconnected");
    const from = b.lines.length;
    const got = await roundTrip(fwd, patternChunk(9, 1000)).catch(() => new Uint8Array());
    assert.equal(got.length, 0, "a connection with no agent behind it carried data");
    const refused = await b.waitForMsg("forward refused", 5000, from);
    assert.match(String(refused.error), /no connected agent on any hub replica|no replica could open/);
    assert.equal(
      await peerForwards("ok") + await peerForwards("no_agent") + await peerForwards("failed"),
      12,
    );
  } finally {
    await agent?.stop();
    for (const h of hubs) await h.stop();
    await echo.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
