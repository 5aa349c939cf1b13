/**
 * Endpoints that carry channels to a Service's ready backends: TCP (round robin, the next backend when a
 * dial fails) and UDP (datagrams framed on the channel, see lib/tunnel/datagram_framing.ts).
 * @module
 */

import dgram from "node:dgram";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { DatagramDecoder, encodeDatagram, type Endpoint, splice } from "../tunnel/mod.ts";
import { dialPlain } from "./endpoints.ts";
import type { ServiceCatalog } from "./service_catalog.ts";

/** Reply bytes a UDP flow may queue toward the hub before replies are dropped. */
const maxBacklogBytes = 1 << 20;

/**
 * The agent's own cap on UDP sockets (one per flow), over all LoadBalancer ports: a hub caps flows per
 * cluster at 2,048 by default, and with two hub replicas an agent may serve both; past this the agent
 * refuses the channel, whatever a hub asks.
 */
export const maxAgentUdpFlows = 4096;

/** Counts the agent's open UDP flows against a cap. */
export class UdpFlowBudget {
  open = 0;
  constructor(readonly max = maxAgentUdpFlows) {}

  /** Takes one flow; returns false when the cap is reached. */
  take(): boolean {
    if (this.open >= this.max) return false;
    this.open++;
    return true;
  }

  /** Gives one flow back. */
  give(): void {
    this.open = Math.max(0, this.open - 1);
  }
}

/** Which Service port an endpoint serves. */
export interface ServicePortRef {
  namespace: string;
  name: string;
  /** Port number or name. */
  port: number | string;
}

/** Channels to a TCP Service port: dials ready backends in turn until one answers. */
export function serviceTcpEndpoint(catalog: ServiceCatalog, ref: ServicePortRef, log: Logger): Endpoint {
  return {
    open: async () => {
      const backends = catalog.readyBackends(ref.namespace, ref.name, ref.port, "TCP");
      if (!backends.length) {
        throw new Error(`service ${ref.namespace}/${ref.name}:${ref.port} has no ready endpoint`);
      }
      let last: Error | undefined;
      for (const b of backends) {
        try {
          const socket = await dialPlain(b.address, b.port, 5000);
          return (channel: Duplex) => splice(channel, socket);
        } catch (e) {
          last = e as Error;
          log.warn("service backend dial failed; trying the next", {
            service: `${ref.namespace}/${ref.name}:${ref.port}`,
            backend: `${b.address}:${b.port}`,
            error: e,
          });
        }
      }
      throw last ?? new Error("no backend answered");
    },
  };
}

/**
 * Channels to a UDP Service port: one socket per channel, to one ready backend, while `budget` (shared
 * by every UDP port of the agent) has room.
 */
export function serviceUdpEndpoint(
  catalog: ServiceCatalog,
  ref: ServicePortRef,
  budget: UdpFlowBudget,
  log: Logger,
): Endpoint {
  return {
    open: () => {
      const backend = catalog.readyBackends(ref.namespace, ref.name, ref.port, "UDP")[0];
      if (!backend) {
        return Promise.reject(
          new Error(`service ${ref.namespace}/${ref.name}:${ref.port}/udp has no ready endpoint`),
        );
      }
      if (!budget.take()) {
        return Promise.reject(new Error(`the agent already carries ${budget.max} UDP flows`));
      }
      return Promise.resolve((channel: Duplex) => {
        const socket = dgram.createSocket(net.isIPv6(backend.address) ? "udp6" : "udp4");
        const decoder = new DatagramDecoder();
        let closed = false;
        const close = () => {
          if (!closed) budget.give();
          closed = true;
          try {
            socket.close();
          } catch {
            // already closed
          }
          channel.destroy();
        };
        socket.on("error", (e) => {
          log.debug("udp backend error", { backend: `${backend.address}:${backend.port}`, error: e });
        });
        socket.on("message", (msg: Uint8Array) => {
          // Past a window's worth of backlog the reply is dropped, as UDP may be: memory stays bounded.
          if (channel.writableLength > maxBacklogBytes) return;
          channel.write(encodeDatagram(msg));
        });
        socket.connect(backend.port, backend.address, () => {
          channel.on("data", (chunk: Uint8Array) => {
            let frames: Uint8Array[];
            try {
              frames = decoder.push(chunk);
            } catch (e) {
              log.warn("udp framing error; closing the flow", { error: e });
              return close();
            }
            for (const f of frames) socket.send(f);
          });
        });
        channel.once("close", close);
        channel.once("end", close);
        channel.on("error", close);
      });
    },
  };
}
