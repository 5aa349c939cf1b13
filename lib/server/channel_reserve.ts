/**
 * Channels opened ahead of need, so a new HTTP connection to a cluster's API server does not wait for a
 * channel open (a round trip through the tunnel, or through a peer replica). A channel taken from the
 * reserve becomes one kept-alive connection of the hub's HTTP client (cluster_upstreams.ts).
 * @module
 */

import { windDownEvent } from "../tunnel/mod.ts";
import type { RoutedChannel } from "./peer_channels.ts";

/** Opens a channel: on a local agent session, or relayed by the peer replica that holds one. */
export type ChannelOpener = () => Promise<RoutedChannel>;

/** A channel with what carries it. */
export type OpenChannel = RoutedChannel;

/**
 * Whether a channel can still carry a request. A relayed channel closes when its peer or the peer's
 * agent goes away, so its own state says it all.
 */
function usable(c: OpenChannel): boolean {
  return !c.channel.destroyed && c.channel.readable && c.channel.writable &&
    (c.agent === undefined || (!c.agent.closed && !c.agent.isLate()));
}

/** Keeps up to `size` unused open channels ready to hand out. */
export class ChannelReserve {
  readonly #open: ChannelOpener;
  readonly #size: number;
  readonly #ready: OpenChannel[] = [];
  #opening = 0;

  constructor(open: ChannelOpener, size = 4) {
    this.#open = open;
    this.#size = size;
  }

  /** A channel: a ready one when there is one, else a newly opened one. Refills in the background. */
  async take(): Promise<OpenChannel> {
    let got: OpenChannel | undefined;
    while ((got = this.#ready.shift())) {
      if (usable(got)) break;
      got.channel.destroy();
    }
    this.#refill();
    return got ?? await this.#open();
  }

  #refill(): void {
    while (this.#ready.length + this.#opening < this.#size) {
      this.#opening++;
      this.#open().then((c) => {
        this.#ready.push(c);
        // A channel that dies while waiting (its agent went away) leaves the reserve; one whose relaying
        // peer is draining (it asks to wind down) is closed.
        const leave = () => {
          const i = this.#ready.indexOf(c);
          if (i >= 0) this.#ready.splice(i, 1);
          return i >= 0;
        };
        c.channel.once("close", leave);
        c.channel.once(windDownEvent, () => void (leave() && c.channel.destroy()));
      }, () => {
        // No agent right now: the next take() opens (and reports the error) itself.
      }).finally(() => this.#opening--);
    }
  }
}
