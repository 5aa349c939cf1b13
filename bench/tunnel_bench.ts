/**
 * Scenarios 1, 6 and 7: bulk throughput through hub ↔ agent (one channel and eight, ws:// and wss://)
 * against a plain loopback TCP copy and a loopback TLS copy of the same bytes in the same run; fairness
 * with a stalled channel; CPU seconds of hub and agent per GiB carried. Also the cost of a channel: 64-byte
 * round trips on one connection, new connections per second and bulk bytes on one connection through
 * `--forward`, each against the same server dialed directly.
 * @module
 */

import tls from "node:tls";
import { Buffer } from "node:buffer";
import net from "node:net";
import { bulkServer, cpuSeconds, dial, drain, mbps, percentile, pump, round, type Row } from "./_util.ts";
import { addCluster, scratchDir, startAgent, startHub } from "../tests/helpers/tower_procs.ts";
import { echoServer, freePort, stallServer } from "../tests/helpers/net_servers.ts";
import { createCa, issueLeaf } from "../lib/server/tls_material.ts";

const GiB = 1 << 30;

/** Times `n` parallel uploads of `bytes` each to `port` (until the far side acknowledges the end). */
async function upload(port: number, bytes: number, n: number, connect = dial): Promise<number> {
  const t0 = performance.now();
  await Promise.all(Array.from({ length: n }, async () => {
    const s = await connect(port);
    const done = drain(s);
    await pump(s, bytes);
    await done;
    s.destroy();
  }));
  return performance.now() - t0;
}

/** Times `n` parallel downloads from a source server. */
async function download(port: number, n: number, connect = dial): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now();
  const counts = await Promise.all(Array.from({ length: n }, async () => {
    // The client sends nothing and does not half-close: over TLS in Deno that would close both ways.
    const s = await connect(port);
    const got = await drain(s);
    s.destroy();
    return got;
  }));
  return { ms: performance.now() - t0, bytes: counts.reduce((a, b) => a + b, 0) };
}

/** Sends 64 bytes on `s` and resolves when 64 bytes came back. */
function ping(s: net.Socket, payload: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (c: Uint8Array) => {
      got += c.length;
      if (got >= payload.length) {
        s.off("data", onData);
        s.off("error", reject);
        resolve();
      }
    };
    s.on("data", onData);
    s.once("error", reject);
    s.write(payload);
  });
}

/** 64-byte round trips on one connection to `port`: p50 and p99 in milliseconds. */
async function roundTrips(port: number, count: number): Promise<{ p50: number; p99: number }> {
  const s = await dial(port);
  const payload = new Uint8Array(64).fill(7);
  for (let i = 0; i < Math.min(200, count); i++) await ping(s, payload); // warm-up
  const ms: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await ping(s, payload);
    ms.push(performance.now() - t0);
  }
  s.destroy();
  ms.sort((a, b) => a - b);
  return { p50: round(percentile(ms, 50), 3), p99: round(percentile(ms, 99), 3) };
}

/**
 * New connections per second to `port` for `seconds`, `parallel` at a time: each a fresh TCP
 * connection, one 64-byte round trip, then close.
 */
async function connectionsPerSecond(port: number, seconds: number, parallel = 8): Promise<number> {
  const payload = new Uint8Array(64).fill(9);
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (performance.now() < end) {
      const s = await dial(port);
      await ping(s, payload);
      s.destroy();
      done++;
    }
  }));
  return Math.round(done / ((performance.now() - t0) / 1000));
}

/** Loopback TLS sink/source with a throwaway CA, and a client dialer trusting it. */
async function tlsBaseline(mode: "sink" | "source", bytes: number) {
  const ca = await createCa("bench");
  const leaf = await issueLeaf(ca, {
    commonName: "bench",
    ipAddresses: ["127.0.0.1"],
    usage: "server",
    validMs: 86_400_000,
  });
  const server = tls.createServer({ cert: leaf.cert, key: leaf.key, allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    s.on("error", () => {});
    if (mode === "sink") {
      s.on("data", () => {});
      s.on("end", () => s.end());
    } else {
      s.on("data", () => {});
      void pump(s as unknown as net.Socket, bytes);
    }
  });
  const port = await new Promise<number>((r) =>
    server.listen(0, "127.0.0.1", () => r((server.address() as net.AddressInfo).port))
  );
  const connect = (p: number) =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port: p, ca: ca.cert }, () =>
        resolve(s as unknown as net.Socket));
      s.setNoDelay(true);
      s.once("error", reject);
    });
  return { port, connect, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Sizes and choice of the channel-cost rows. */
export interface ChannelCostOptions {
  /** Round trips measured (after a warm-up); 0 skips the rtt rows. */
  roundTrips: number;
  /** Seconds of new connections; 0 skips the connect rows. */
  connectSeconds: number;
  /** Bytes each way on one connection; 0 skips the bulk rows. */
  bulkBytes: number;
}

/**
 * The cost of a channel through `--forward` (wss): 64-byte round trips, new connections per second and
 * bulk bytes each way on one connection, each with the same server dialed directly as the baseline.
 */
export async function channelCostBench(opts: ChannelCostOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const echo = await echoServer();
  const sink = await bulkServer("sink");
  const source = await bulkServer("source", opts.bulkBytes);
  const dataDir = await scratchDir("bench-channel");
  const c = await addCluster(dataDir, "bench");
  const ports = { echo: await freePort(), sink: await freePort(), source: await freePort() };
  const hub = await startHub({
    dataDir,
    args: Object.entries(ports).flatMap(([name, p]) => ["--forward", `127.0.0.1:${p}=bench/${name}`]),
  });
  const agent = startAgent({
    hubUrl: hub.url,
    cluster: "bench",
    token: c.token,
    fingerprint: c.fingerprint,
    caFile: c.caFile,
    publish: [
      `echo=127.0.0.1:${echo.port}`,
      `sink=127.0.0.1:${sink.port}`,
      `source=127.0.0.1:${source.port}`,
    ],
  });
  try {
    await agent.waitForMsg("connected to hub");
    if (opts.roundTrips) {
      // Direct and tunnelled back to back, so both see the same machine load.
      const directRtt = await roundTrips(echo.port, opts.roundTrips);
      const rtt = await roundTrips(ports.echo, opts.roundTrips);
      rows.push({
        scenario: "rtt",
        case: "64 B round trip, direct",
        p50Ms: directRtt.p50,
        p99Ms: directRtt.p99,
      });
      rows.push({
        scenario: "rtt",
        case: "64 B round trip, --forward (wss)",
        p50Ms: rtt.p50,
        p99Ms: rtt.p99,
        p50VsDirect: round(rtt.p50 / directRtt.p50, 1),
        p99VsDirect: round(rtt.p99 / directRtt.p99, 1),
      });
    }
    if (opts.connectSeconds) {
      const directConn = await connectionsPerSecond(echo.port, opts.connectSeconds);
      const conn = await connectionsPerSecond(ports.echo, opts.connectSeconds);
      rows.push({ scenario: "connect", case: "new connections, direct", perSecond: directConn });
      rows.push({
        scenario: "connect",
        case: "new connections, --forward (wss)",
        perSecond: conn,
        vsDirect: round(conn / directConn),
      });
    }
    if (opts.bulkBytes) {
      const directUp = mbps(opts.bulkBytes, await upload(sink.port, opts.bulkBytes, 1));
      const directDown = await download(source.port, 1);
      // CPU seconds per GiB of hub and agent alongside: throughput alone swings with the machine's load.
      const cpu = () => cpuSeconds(hub.child.pid) + cpuSeconds(agent.child.pid);
      const cpu0 = cpu();
      const up = mbps(opts.bulkBytes, await upload(ports.sink, opts.bulkBytes, 1));
      const cpu1 = cpu();
      const down = await download(ports.source, 1);
      const cpu2 = cpu();
      rows.push({
        scenario: "bulk",
        case: "one connection, direct",
        upMBps: directUp,
        downMBps: mbps(directDown.bytes, directDown.ms),
      });
      rows.push({
        scenario: "bulk",
        case: "one connection, --forward (wss)",
        upMBps: up,
        downMBps: mbps(down.bytes, down.ms),
        upCpuSecPerGiB: round(((cpu1 - cpu0) * GiB) / opts.bulkBytes),
        downCpuSecPerGiB: round(((cpu2 - cpu1) * GiB) / Math.max(1, down.bytes)),
      });
    }
  } finally {
    await agent.stop();
    await hub.stop();
    await Promise.all([echo.close(), sink.close(), source.close()]);
    await Deno.remove(dataDir, { recursive: true });
  }
  return rows;
}

/** Runs the throughput, fairness and CPU scenarios. `bytes` is the per-direction volume. */
export async function tunnelBench(bytes: number): Promise<Row[]> {
  const rows: Row[] = [];
  const per8 = Math.floor(bytes / 8);
  // Baselines: the physical limit of this machine for the same copy.
  const sink = await bulkServer("sink");
  const src1 = await bulkServer("source", bytes);
  const src8 = await bulkServer("source", per8);
  const tcpUp = await upload(sink.port, bytes, 1);
  const tcpDown = await download(src1.port, 1);
  rows.push({
    scenario: "throughput",
    case: "loopback TCP copy",
    upMBps: mbps(bytes, tcpUp),
    downMBps: mbps(tcpDown.bytes, tcpDown.ms),
  });
  const tlsSink = await tlsBaseline("sink", 0);
  const tlsSrc = await tlsBaseline("source", bytes);
  const tlsUp = await upload(tlsSink.port, bytes, 1, tlsSink.connect);
  const tlsDown = await download(tlsSrc.port, 1, tlsSrc.connect);
  const tlsRef = { up: mbps(bytes, tlsUp), down: mbps(tlsDown.bytes, tlsDown.ms) };
  rows.push({ scenario: "throughput", case: "loopback TLS copy", upMBps: tlsRef.up, downMBps: tlsRef.down });
  await Promise.all([tlsSink.close(), tlsSrc.close()]);

  const stall = await stallServer();
  for (const transport of ["ws", "wss"] as const) {
    const dataDir = await scratchDir("bench-tunnel");
    const c = await addCluster(dataDir, "bench");
    const ports = {
      sink: await freePort(),
      src1: await freePort(),
      src8: await freePort(),
      stall: await freePort(),
    };
    const hub = await startHub({
      dataDir,
      plain: transport === "ws",
      args: Object.entries(ports).flatMap(([name, p]) => ["--forward", `127.0.0.1:${p}=bench/${name}`]),
    });
    const agent = startAgent({
      hubUrl: hub.url,
      cluster: "bench",
      token: c.token,
      fingerprint: c.fingerprint,
      ...(transport === "wss" ? { caFile: c.caFile } : {}),
      publish: [
        `sink=127.0.0.1:${sink.port}`,
        `src1=127.0.0.1:${src1.port}`,
        `src8=127.0.0.1:${src8.port}`,
        `stall=127.0.0.1:${stall.port}`,
      ],
    });
    try {
      await agent.waitForMsg("connected to hub");
      const cpu0 = { hub: cpuSeconds(hub.child.pid), agent: cpuSeconds(agent.child.pid) };
      const up1 = await upload(ports.sink, bytes, 1);
      const down1 = await download(ports.src1, 1);
      const up8 = await upload(ports.sink, per8, 8);
      const down8 = await download(ports.src8, 8);
      const cpu1 = { hub: cpuSeconds(hub.child.pid), agent: cpuSeconds(agent.child.pid) };
      const carried = 2 * bytes + 2 * per8 * 8;
      rows.push({
        scenario: "throughput",
        case: `tunnel ${transport}, 1 channel`,
        upMBps: mbps(bytes, up1),
        downMBps: mbps(down1.bytes, down1.ms),
        vsTlsUp: round(mbps(bytes, up1) / tlsRef.up),
        vsTlsDown: round(mbps(down1.bytes, down1.ms) / tlsRef.down),
      });
      rows.push({
        scenario: "throughput",
        case: `tunnel ${transport}, 8 channels`,
        upMBps: mbps(per8 * 8, up8),
        downMBps: mbps(down8.bytes, down8.ms),
        vsTlsUp: round(mbps(per8 * 8, up8) / tlsRef.up),
        vsTlsDown: round(mbps(down8.bytes, down8.ms) / tlsRef.down),
      });
      rows.push({
        scenario: "cpu",
        case: `tunnel ${transport}`,
        hubCpuSecPerGiB: round(((cpu1.hub - cpu0.hub) * GiB) / carried),
        agentCpuSecPerGiB: round(((cpu1.agent - cpu0.agent) * GiB) / carried),
      });
      if (transport === "wss") {
        // Fairness: the same eight uploads, alone and next to a channel whose reader stopped.
        const alone = mbps(per8 * 8, await upload(ports.sink, per8, 8));
        const stalled = await dial(ports.stall);
        stalled.on("error", () => {});
        const filler = Buffer.alloc(1 << 20);
        for (let i = 0; i < 64 && stalled.write(filler); i++);
        const withStall = mbps(per8 * 8, await upload(ports.sink, per8, 8));
        stalled.destroy();
        rows.push({
          scenario: "fairness",
          case: "8 busy channels (wss)",
          aloneMBps: alone,
          withStalledMBps: withStall,
          differencePct: round((100 * (alone - withStall)) / alone, 1),
        });
      }
    } finally {
      await agent.stop();
      await hub.stop();
      await Deno.remove(dataDir, { recursive: true });
    }
  }
  await Promise.all([sink.close(), src1.close(), src8.close(), stall.close()]);
  return rows;
}
