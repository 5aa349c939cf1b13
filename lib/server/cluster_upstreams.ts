/**
 * Where the hub sends a cluster's requests: kept-alive HTTP clients over channels to the cluster's
 * endpoints, one set per API auth mode and one per Service port. Channels come from the
 * {@link ChannelRouter}: on an agent session of this replica, or relayed by the peer replica that holds
 * one. API channels come from a reserve opened ahead of need, so a new connection does not wait for a
 * channel-open round trip.
 * @module
 */

import type { AuthMode } from "../registry/mod.ts";
import { kubernetesEndpoint, serviceEndpointName } from "../kube/endpoint_names.ts";
import { DuplexClients } from "../proxy/mod.ts";
import { ChannelReserve } from "./channel_reserve.ts";
import type { ChannelRouter } from "./channel_router.ts";
import type { RoutedChannel } from "./peer_channels.ts";
import type { ServiceRef } from "./kube_route.ts";

/** Clients whose connections are channels; the carrier says which agent session or peer carries each. */
export type ChannelClients = DuplexClients<RoutedChannel>;

/**
 * A kept-alive channel may take another request while it is open, its agent session is connected and not
 * late (and not crowded: see ChannelRouter.crowded). A channel relayed by a peer replica is not reused:
 * while the peer drains, a kept-alive relay would carry requests to agent sessions that are moving away.
 */
function usable(c: RoutedChannel): boolean {
  return !c.channel.destroyed && c.agent !== undefined && !c.agent.closed && !c.agent.isLate();
}

/** Service ports with kept-alive clients at once; the least recently used beyond this are closed. */
const maxServicePools = 256;

/** The upstreams of every cluster, as one object. */
export class ClusterUpstreams {
  readonly #channels: ChannelRouter;
  readonly #api = new Map<string, ChannelClients>();
  readonly #services = new Map<string, ChannelClients>();

  constructor(channels: ChannelRouter) {
    this.#channels = channels;
  }

  /**
   * The clients for `cluster`'s API server in `mode`. A connection that cannot be had fails the request
   * with the router's error: NoAgentError (no replica holds an agent) or UnsuitableAgentError (the agents
   * refuse the mode).
   */
  api(cluster: string, mode: AuthMode): ChannelClients {
    const key = `${cluster}|${mode}`;
    let clients = this.#api.get(key);
    if (!clients) {
      const unsuitable = `the agents of cluster '%s' do not accept auth mode '${mode}'`;
      const reserve = new ChannelReserve(() =>
        this.#channels.openChannel(cluster, kubernetesEndpoint, mode, unsuitable)
      );
      clients = new DuplexClients({
        dial: async () => {
          const routed = await reserve.take();
          return { duplex: routed.channel, carrier: routed };
        },
        usable: (c) => this.#reusable(c, kubernetesEndpoint, mode),
      });
      this.#api.set(key, clients);
    }
    return clients;
  }

  /** The clients for a Service port of `cluster` (HTTP requests and upgrades to it). */
  service(cluster: string, svc: ServiceRef): ChannelClients {
    const endpoint = serviceEndpointName(svc.namespace, svc.name, svc.port);
    const key = `${cluster}|${endpoint}`;
    let clients = this.#services.get(key);
    if (clients) {
      this.#services.delete(key); // re-inserted below: most recently used last
    } else {
      clients = new DuplexClients({
        dial: async () => {
          const routed = await this.#channels.openChannel(cluster, endpoint);
          return { duplex: routed.channel, carrier: routed };
        },
        usable: (c) => this.#reusable(c, endpoint),
        maxIdle: 8,
      });
      if (this.#services.size >= maxServicePools) {
        const [oldest, pool] = this.#services.entries().next().value!;
        this.#services.delete(oldest);
        pool.close();
      }
    }
    this.#services.set(key, clients);
    return clients;
  }

  /**
   * Whether a kept-alive channel takes another request. Not on a replica with peers (yet): with channels
   * kept alive there, ha_test's rolling restart failed some requests (503 on a stale route, 502) where
   * main did not; until that is understood, replicas with a peer link close each channel after its
   * request, as before.
   */
  #reusable(c: RoutedChannel, endpoint: string, mode?: AuthMode): boolean {
    return !this.#channels.peered && usable(c) && !this.#channels.crowded(c, endpoint, mode);
  }

  /** A channel of its own to a Service port, for a raw TCP stream (`main_server.ts forward`). */
  serviceChannel(cluster: string, svc: ServiceRef): Promise<RoutedChannel> {
    return this.#channels.openChannel(cluster, serviceEndpointName(svc.namespace, svc.name, svc.port));
  }

  /** Closes every idle client. */
  close(): void {
    for (const c of [...this.#api.values(), ...this.#services.values()]) c.close();
    this.#api.clear();
    this.#services.clear();
  }
}
