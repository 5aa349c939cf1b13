/**
 * Caps on the UDP flows of LoadBalancer ports. Every flow costs an SSH channel and a UDP socket on the
 * agent, and UDP source addresses are free to forge, so flows are capped per public port, per sender
 * ({@link addressBucket}) and per cluster. A datagram that would open a flow beyond a cap is dropped,
 * counted, and reported in at most one log line per port every {@link refusalLogEveryMs}.
 * @module
 */

import type { Logger } from "../log/log.ts";
import { ReportEvery } from "../log/report_every.ts";
import { addressBucket } from "./address_bucket.ts";

/** The caps (hub flags `--lb-udp-flows-per-port`, `-per-source`, `-per-cluster`). */
export interface UdpFlowCaps {
  perPort: number;
  perSource: number;
  perCluster: number;
}

/**
 * Defaults. The review measured ~80 KiB of agent memory per flow (368 MiB for ~4,700), so 2,048 flows
 * per cluster keep a flooded agent near 160 MiB; one port may take half of that, so one Service cannot
 * starve the cluster's others; one sender (an IPv4 address or IPv6 /64, a NAT gateway included) may
 * hold 64 flows at once, so filling one port takes 16 senders.
 */
export const defaultUdpFlowCaps: UdpFlowCaps = { perPort: 1024, perSource: 64, perCluster: 2048 };

/** Refusal reports are rate-limited to one line per port per this long. */
export const refusalLogEveryMs = 10_000;

/** Which cap refused a flow. */
export type FlowCap = keyof UdpFlowCaps;

/** Flow counts of one cluster, shared by its ports. */
export class ClusterFlowCount {
  count = 0;
}

/** The flow accounting of one public UDP port. */
export class PortFlowLedger {
  readonly #caps: UdpFlowCaps;
  readonly #cluster: ClusterFlowCount;
  readonly #log: Logger;
  readonly #perSource = new Map<string, number>();
  #open = 0;
  /** Flows refused since the port opened, per cap. */
  readonly refused: Record<FlowCap, number> = { perPort: 0, perSource: 0, perCluster: 0 };
  readonly #refusals = new ReportEvery(refusalLogEveryMs);

  constructor(caps: UdpFlowCaps, cluster: ClusterFlowCount, log: Logger) {
    this.#caps = caps;
    this.#cluster = cluster;
    this.#log = log;
  }

  /** Flows open on this port. */
  get open(): number {
    return this.#open;
  }

  /**
   * Takes a flow for a sender at `address`; returns a release function (call it once, when the flow
   * ends), or undefined when a cap refuses it (counted and reported).
   */
  take(address: string, now = Date.now()): (() => void) | undefined {
    const bucket = addressBucket(address);
    const fromSource = this.#perSource.get(bucket) ?? 0;
    const cap: FlowCap | undefined = this.#open >= this.#caps.perPort
      ? "perPort"
      : fromSource >= this.#caps.perSource
      ? "perSource"
      : this.#cluster.count >= this.#caps.perCluster
      ? "perCluster"
      : undefined;
    if (cap) {
      this.refused[cap]++;
      const unreported = this.#refusals.count(now);
      if (unreported !== undefined) {
        this.#log.warn("lb udp flows refused", {
          cap,
          limit: this.#caps[cap],
          source: bucket,
          droppedSinceLastReport: unreported,
          refused: { ...this.refused },
        });
      }
      return undefined;
    }
    this.#open++;
    this.#cluster.count++;
    this.#perSource.set(bucket, fromSource + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      this.#cluster.count--;
      const n = (this.#perSource.get(bucket) ?? 1) - 1;
      if (n > 0) this.#perSource.set(bucket, n);
      else this.#perSource.delete(bucket);
    };
  }
}
