/**
 * Public ports for LoadBalancer Services of connected clusters. Agents send the ports their
 * LoadBalancer Services want (`lb-sync`); the hub gives each a port from a configured range, keeps the
 * allocation in the registry (so it survives agent reconnects and hub restarts), listens on it, and
 * carries each TCP connection or UDP flow over a channel to an agent of that cluster.
 *
 * UDP: one channel per client address (a flow), datagrams framed as in lib/tunnel/datagram_framing.ts;
 * flows idle longer than `udpIdleMs` are closed, so replies always go back to the client that asked.
 * Flows are capped per port, per sender and per cluster (udp_flow_caps.ts); beyond a cap datagrams that
 * would open a flow are dropped.
 * @module
 */

import dgram from "node:dgram";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import type { LoadBalancerPort, Registry, RegistryData } from "../registry/mod.ts";
import {
  type AgentConnection,
  type ControlMessage,
  DatagramDecoder,
  encodeDatagram,
  splice,
} from "../tunnel/mod.ts";
import type { ClusterSessions } from "./cluster_sessions.ts";
import type { ChannelRouter } from "./channel_router.ts";
import { lbEndpointName } from "../kube/endpoint_names.ts";
import { allocateLbPorts, lbKey } from "./lb_allocation.ts";
import { ClusterFlowCount, PortFlowLedger, type UdpFlowCaps } from "./udp_flow_caps.ts";

/** LoadBalancer settings of the hub. */
export interface LbConfig {
  /** Inclusive range of public ports to hand out. */
  portRange: [number, number];
  /** Address written into Service status: an IP or a hostname. */
  publicAddress: string;
  /** Where the public listeners bind. */
  bindHost: string;
  udpIdleMs: number;
  /** Caps on concurrent UDP flows (see udp_flow_caps.ts). */
  udpFlowCaps: UdpFlowCaps;
}

/** A port the agent asked for. */
interface WantedPort {
  port: number;
  protocol: "TCP" | "UDP";
}

/** A running public listener. */
interface Listener {
  alloc: LoadBalancerPort;
  /** Flows open now: TCP connections, or UDP peers. */
  flows(): number;
  close(): Promise<void>;
}

/** Allocates, persists and serves public LoadBalancer ports. */
export class LbManager {
  readonly #cfg: LbConfig;
  readonly #sessions: ClusterSessions;
  readonly #channels: ChannelRouter;
  readonly #registry: Registry;
  readonly #log: Logger;
  readonly #listeners = new Map<string, Listener>();
  readonly #udpFlows = new Map<string, ClusterFlowCount>();
  /** One allocation change at a time, so two agents' syncs never hand out the same port. */
  #queue: Promise<unknown> = Promise.resolve();
  readonly #refusedHandlers = new Set<(reason: string, service: string) => void>();

  constructor(
    cfg: LbConfig,
    sessions: ClusterSessions,
    channels: ChannelRouter,
    registry: Registry,
    log: Logger,
  ) {
    this.#cfg = cfg;
    this.#sessions = sessions;
    this.#channels = channels;
    this.#registry = registry;
    this.#log = log.with({ component: "lb" });
  }

  /** Opens listeners for every allocation already in the registry. */
  async start(data: RegistryData): Promise<void> {
    for (const a of data.loadBalancers) await this.#listen(a);
  }

  /**
   * Listens on every allocation in the registry and on no other: allocations another replica made for
   * its agents (every replica serves every public port; the connection's channel goes through the peer
   * holding an agent), and none that another replica released.
   */
  follow(): Promise<void> {
    this.#queue = this.#queue.then(async () => {
      // Read inside the queue: a snapshot taken before one of this replica's own changes must not undo it.
      const wanted = new Map((await this.#registry.read()).loadBalancers.map((a) => [lbKey(a), a]));
      for (const [key, l] of [...this.#listeners]) {
        const w = wanted.get(key);
        if (!w || w.publicPort !== l.alloc.publicPort) await this.#unlisten(l.alloc);
      }
      for (const a of wanted.values()) await this.#listen(a);
    }).catch((e) => this.#log.error("lb follow failed", { error: e }));
    return this.#queue as Promise<void>;
  }

  /** Closes every listener. */
  async close(): Promise<void> {
    await Promise.all([...this.#listeners.values()].map((l) => l.close()));
    this.#listeners.clear();
  }

  /** Allocations currently served (for tests and status). */
  allocations(): LoadBalancerPort[] {
    return [...this.#listeners.values()].map((l) => l.alloc);
  }

  /** Allocations with their open flows. */
  ports(): { alloc: LoadBalancerPort; flows: number }[] {
    return [...this.#listeners.values()].map((l) => ({ alloc: l.alloc, flows: l.flows() }));
  }

  /** Open flows on all public ports, by protocol. */
  flowsOpen(): { tcp: number; udp: number } {
    const open = { tcp: 0, udp: 0 };
    for (const l of this.#listeners.values()) open[l.alloc.protocol === "UDP" ? "udp" : "tcp"] += l.flows();
    return open;
  }

  /** Calls `handler` for each flow that could not be carried (for metrics and the status page). */
  onRefused(handler: (reason: string, service: string) => void): void {
    this.#refusedHandlers.add(handler);
  }

  #refused(reason: string, a: LoadBalancerPort): void {
    for (const h of this.#refusedHandlers) h(reason, `${a.cluster}/${a.service}:${a.port}/${a.protocol}`);
  }

  /** Handles a control message from an agent; true when it was an LB message. */
  onControl(agent: AgentConnection, msg: ControlMessage): boolean {
    if (msg.type !== "lb-sync") return false;
    const services = parseSync(msg.services);
    if (!services) {
      this.#log.warn("malformed lb-sync ignored", { agent: agent.id });
      return true;
    }
    this.#queue = this.#queue.then(() => this.#sync(agent, services)).catch((e) =>
      this.#log.error("lb sync failed", { agent: agent.id, error: e })
    );
    return true;
  }

  /** Releases every allocation of a cluster (it was removed from the hub). */
  releaseCluster(cluster: string): Promise<void> {
    this.#queue = this.#queue.then(() => this.#apply(cluster, new Map())).catch((e) =>
      this.#log.error("lb release failed", { cluster, error: e })
    );
    return this.#queue as Promise<void>;
  }

  async #sync(agent: AgentConnection, services: Map<string, WantedPort[]>): Promise<void> {
    const result = await this.#apply(agent.cluster, services);
    const ip = net.isIP(this.#cfg.publicAddress)
      ? { ip: this.#cfg.publicAddress }
      : { hostname: this.#cfg.publicAddress };
    // Every agent of the cluster writes the same status; whichever writes first wins, the rest agree.
    const msg = { type: "lb-status", address: ip, services: result };
    for (const a of this.#sessions.of(agent.cluster)) a.send(msg);
  }

  /** Makes the cluster's allocations match `services`; returns the per-Service outcome. */
  async #apply(
    cluster: string,
    services: Map<string, WantedPort[]>,
  ): Promise<{ service: string; ports: (WantedPort & { publicPort?: number; error?: string })[] }[]> {
    const wanted = new Map<string, { service: string } & WantedPort>();
    for (const [service, ports] of services) {
      for (const p of ports) wanted.set(lbKey({ cluster, service, ...p }), { service, ...p });
    }
    // Runs again on fresher data when another writer won a race; the last run's result is what holds.
    const { added, removed, failures } = await this.#registry.update((data) =>
      allocateLbPorts(data, cluster, wanted, this.#cfg.portRange)
    );
    for (const a of removed) await this.#unlisten(a);
    for (const a of added) {
      const error = await this.#listen(a);
      if (error) {
        failures.set(lbKey(a), error);
        await this.#registry.update((data) => {
          data.loadBalancers = data.loadBalancers.filter((x) => lbKey(x) !== lbKey(a));
        });
      }
    }
    // Allocations another replica made for this cluster's other agents: served here too, at once (the
    // registry watch would get there, but this agent's status would say "not allocated" meanwhile).
    for (const a of (await this.#registry.read()).loadBalancers) {
      if (a.cluster === cluster && wanted.has(lbKey(a))) await this.#listen(a);
    }
    if (added.length || removed.length) {
      this.#log.info("lb ports changed", {
        cluster,
        added: added.map((a) => `${a.service}:${a.port}/${a.protocol}→${a.publicPort}`),
        released: removed.map((a) => `${a.service}:${a.port}/${a.protocol}→${a.publicPort}`),
      });
    }
    return [...services].map(([service, ports]) => ({
      service,
      ports: ports.map((p) => {
        const key = lbKey({ cluster, service, ...p });
        const l = this.#listeners.get(key);
        return l
          ? { ...p, publicPort: l.alloc.publicPort }
          : { ...p, error: failures.get(key) ?? "not allocated" };
      }),
    }));
  }

  async #unlisten(a: LoadBalancerPort): Promise<void> {
    const l = this.#listeners.get(lbKey(a));
    this.#listeners.delete(lbKey(a));
    await l?.close();
  }

  /** Starts serving an allocation; returns an error message when the port cannot be bound. */
  async #listen(a: LoadBalancerPort): Promise<string | undefined> {
    if (this.#listeners.has(lbKey(a))) return undefined;
    try {
      const l = a.protocol === "TCP" ? await this.#listenTcp(a) : await this.#listenUdp(a);
      this.#listeners.set(lbKey(a), l);
      this.#log.info("lb port listening", {
        service: `${a.cluster}/${a.service}:${a.port}/${a.protocol}`,
        publicPort: a.publicPort,
      });
      return undefined;
    } catch (e) {
      this.#log.error("lb port not available", { publicPort: a.publicPort, protocol: a.protocol, error: e });
      return `port ${a.publicPort}/${a.protocol} cannot be bound on the hub: ${(e as Error).message}`;
    }
  }

  #listenTcp(a: LoadBalancerPort): Promise<Listener> {
    const endpoint = lbEndpointName(a.service, a.port, "TCP");
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.setNoDelay(true);
      socket.on("error", () => {});
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      this.#channels.openChannel(a.cluster, endpoint).then(({ channel }) => splice(socket, channel), (e) => {
        this.#log.warn("lb connection refused", { service: `${a.cluster}/${a.service}:${a.port}`, error: e });
        this.#refused("no_agent", a);
        socket.destroy();
      });
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(a.publicPort, this.#cfg.bindHost, () => {
        server.off("error", reject);
        resolve({
          alloc: a,
          flows: () => sockets.size,
          close: () =>
            new Promise((r) => {
              for (const s of sockets) s.destroy();
              server.close(() => r());
            }),
        });
      });
    });
  }

  #listenUdp(a: LoadBalancerPort): Promise<Listener> {
    const endpoint = lbEndpointName(a.service, a.port, "UDP");
    const socket = dgram.createSocket(net.isIPv6(this.#cfg.bindHost) ? "udp6" : "udp4");
    type Flow = { channel?: Duplex; queue: Uint8Array[]; lastSeen: number; release: () => void };
    const flows = new Map<string, Flow>();
    let clusterFlows = this.#udpFlows.get(a.cluster);
    if (!clusterFlows) this.#udpFlows.set(a.cluster, clusterFlows = new ClusterFlowCount());
    const ledger = new PortFlowLedger(
      this.#cfg.udpFlowCaps,
      clusterFlows,
      this.#log.with({ service: `${a.cluster}/${a.service}:${a.port}/UDP`, publicPort: a.publicPort }),
    );
    const forget = (key: string, f: Flow) => {
      if (flows.get(key) !== f) return;
      flows.delete(key);
      f.release();
    };
    const endFlow = (key: string) => {
      const f = flows.get(key);
      if (!f) return;
      forget(key, f);
      f.channel?.destroy();
    };
    socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      const key = `${rinfo.address}|${rinfo.port}`;
      let flow = flows.get(key);
      if (!flow) {
        const release = ledger.take(rinfo.address);
        if (!release) {
          this.#refused("flow_cap", a);
          return;
        }
        const f: Flow = { queue: [msg], lastSeen: Date.now(), release };
        flow = f;
        flows.set(key, f);
        this.#channels.openChannel(a.cluster, endpoint).then(({ channel }) => {
          if (flows.get(key) !== f) return channel.destroy();
          f.channel = channel;
          const decoder = new DatagramDecoder();
          channel.on("data", (chunk: Uint8Array) => {
            f.lastSeen = Date.now();
            try {
              for (const d of decoder.push(chunk)) socket.send(d, rinfo.port, rinfo.address);
            } catch {
              endFlow(key);
            }
          });
          channel.once("close", () => forget(key, f));
          channel.on("error", () => endFlow(key));
          for (const d of f.queue) channel.write(encodeDatagram(d));
          f.queue = [];
        }, (e) => {
          this.#log.debug("lb udp flow refused", {
            service: `${a.cluster}/${a.service}:${a.port}`,
            error: e,
          });
          forget(key, f);
          this.#refused("no_agent", a);
        });
        return;
      }
      flow.lastSeen = Date.now();
      if (flow.channel) {
        // Past a window's worth of backlog, drop: UDP may, and memory stays bounded.
        if (flow.channel.writableLength < 1 << 20) flow.channel.write(encodeDatagram(msg));
      } else if (flow.queue.length < 64) flow.queue.push(msg);
    });
    socket.on("error", (e) => this.#log.warn("lb udp socket error", { publicPort: a.publicPort, error: e }));
    const sweep = setInterval(() => {
      const cutoff = Date.now() - this.#cfg.udpIdleMs;
      for (const [key, f] of flows) if (f.lastSeen < cutoff) endFlow(key);
    }, Math.min(1000, this.#cfg.udpIdleMs));
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(a.publicPort, this.#cfg.bindHost, () => {
        socket.off("error", reject);
        resolve({
          alloc: a,
          flows: () => flows.size,
          close: () =>
            new Promise((r) => {
              clearInterval(sweep);
              for (const key of [...flows.keys()]) endFlow(key);
              socket.close(() => r());
            }),
        });
      });
    });
  }
}

/** Validates an `lb-sync` payload. */
function parseSync(raw: unknown): Map<string, WantedPort[]> | undefined {
  if (!Array.isArray(raw)) return undefined;
  const out = new Map<string, WantedPort[]>();
  for (const s of raw) {
    if (
      !s || typeof s.service !== "string" || !/^[a-z0-9.-]+\/[a-z0-9.-]+$/.test(s.service) ||
      !Array.isArray(s.ports)
    ) {
      return undefined;
    }
    const ports: WantedPort[] = [];
    for (const p of s.ports) {
      if (!Number.isInteger(p?.port) || p.port < 1 || p.port > 65535) return undefined;
      if (p.protocol !== "TCP" && p.protocol !== "UDP") return undefined;
      ports.push({ port: p.port, protocol: p.protocol });
    }
    out.set(s.service, ports);
  }
  return out;
}
