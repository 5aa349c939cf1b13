/**
 * Channels opened ahead of need, so a request to a cluster's API server does not wait for an SSH
 * channel open (a round trip through the tunnel). Each channel carries one request and is then closed.
 *
 * Why not HTTP keep-alive with an `http.Agent` over channels: in Deno's `node:http` client an Agent does
 * not reuse connections it created asynchronously; a `createConnection` passed per request without an
 * agent lands in the global keep-alive pool and is handed to a later request, which then hangs; and
 * `agent: false` ignores `createConnection` altogether. What works is {@link oneShotAgent}: an agent per
 * request whose only connection is the channel, given synchronously.
 * @module
 */

import http from "node:http";
import type { Duplex } from "node:stream";
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
        // A channel that dies while waiting (its agent went away) leaves the reserve.
        c.channel.once("close", () => {
          const i = this.#ready.indexOf(c);
          if (i >= 0) this.#ready.splice(i, 1);
        });
      }, () => {
        // No agent right now: the next take() opens (and reports the error) itself.
      }).finally(() => this.#opening--);
    }
  }
}

/**
 * Closes a channel for good. It is resumed first: ssh2 reports a channel closed only once its readable
 * side has ended, which a paused channel (a slow client's backpressure) never does.
 */
export function discard(channel: Duplex): void {
  channel.resume();
  channel.destroy();
}

/**
 * Channels kept open between API requests (HTTP keep-alive inside the tunnel, see
 * lib/proxy/channel_http.ts), each carrying one request at a time; new ones come from a reserve.
 */
export class KeepAliveChannels {
  readonly #reserve: ChannelReserve;
  readonly #maxIdle: number;
  /** Idle channels, most recently used last, with what removes each one should it close while idle. */
  readonly #idle: { c: OpenChannel; gone: () => void }[] = [];

  constructor(reserve: ChannelReserve, maxIdle = 32) {
    this.#reserve = reserve;
    this.#maxIdle = maxIdle;
  }

  /** The most recently used idle channel (`reused`), else one from the reserve. */
  async take(): Promise<OpenChannel & { reused: boolean }> {
    let idle;
    while ((idle = this.#idle.pop())) {
      idle.c.channel.off("close", idle.gone).off("end", idle.gone).off("data", idle.gone);
      if (usable(idle.c)) return { ...idle.c, reused: true };
      discard(idle.c.channel);
    }
    return { ...(await this.#reserve.take()), reused: false };
  }

  /** Gives back a channel whose exchange ended cleanly; beyond `maxIdle` idle ones it is closed. */
  give(c: OpenChannel): void {
    if (!usable(c) || this.#idle.length >= this.#maxIdle) return discard(c.channel);
    const entry = {
      c,
      // Closed by the agent, or bytes nobody asked for: either way it cannot carry a request.
      gone: () => {
        const i = this.#idle.indexOf(entry);
        if (i >= 0) this.#idle.splice(i, 1);
        discard(c.channel);
      },
    };
    // An idle channel keeps flowing, so its end and close are seen as they happen.
    c.channel.once("close", entry.gone).once("end", entry.gone).once("data", entry.gone).resume();
    this.#idle.push(entry);
  }
}

/** An `http.Agent` for exactly one request over `channel` (see the module note for why). */
export function oneShotAgent(channel: Duplex): http.Agent {
  const agent = new http.Agent({ keepAlive: false });
  agent.createConnection = () => channel as unknown as import("node:net").Socket;
  return agent;
}
