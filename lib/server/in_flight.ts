/**
 * The user requests and streams a hub is serving, so a draining hub knows when the ordinary ones are
 * done and can end the long-running ones (watches, `logs -f`, exec, port-forward) cleanly at the end.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";
import { type EofFramed, windDownEvent } from "../tunnel/mod.ts";

/** One tracked request or upgraded stream. */
interface Tracked {
  longRunning: boolean;
  /** Ends it in a way the client sees as a normal end. */
  end(): void;
}

/**
 * Asks the relay of a stream to end it at its next message boundary (a watch event, a WebSocket frame),
 * when one listens for {@link windDownEvent}; false when none does.
 */
function windDown(stream: http.ServerResponse | Duplex): boolean {
  if (stream.listenerCount(windDownEvent) === 0) return false;
  stream.emit(windDownEvent);
  return true;
}

/** Requests and upgraded streams in flight, counted ordinary vs long-running. */
export class InFlight {
  readonly #open = new Set<Tracked>();
  readonly #relayed = new Set<EofFramed>();
  #draining = false;
  #lastStart = 0;
  #changeHandlers = new Set<() => void>();

  /**
   * Tracks a plain request until its response closes. While draining, the response asks the client
   * to close its connection, so the client's next request opens a new one (which a load balancer sends
   * to a replica that is not draining).
   */
  request(res: http.ServerResponse, longRunning: boolean): void {
    this.#lastStart = performance.now();
    if (this.#draining && !res.headersSent) res.setHeader("connection", "close");
    const t: Tracked = {
      longRunning,
      end: () => {
        // A streamed body ends with its last chunk: a watch or `logs -f` client sees a normal end, after
        // the event in progress when the proxy relays one.
        if (windDown(res)) return;
        if (res.headersSent && !res.writableEnded) res.end();
        else if (!res.headersSent) res.destroy();
      },
    };
    this.#add(t);
    res.once("close", () => this.#remove(t));
  }

  /** Tracks an upgraded stream (exec, attach, port-forward, a forwarded TCP stream) until it closes. */
  upgrade(socket: Duplex): void {
    this.#lastStart = performance.now();
    // The proxy closes it the way its protocol does (a WebSocket Close frame, a SPDY GOAWAY) at a frame
    // boundary. Otherwise ending our side lets what was written go out, then the connection closes (TCP
    // FIN, not a reset).
    const t: Tracked = { longRunning: true, end: () => void (windDown(socket) || socket.end()) };
    this.#add(t);
    socket.once("close", () => this.#remove(t));
  }

  /**
   * Tracks a channel this replica relays for a peer replica (its user request landed there) until it
   * closes. It is neither ordinary nor long-running here: the peer counts its request. At the end of a
   * drain the peer is told to wind it down ({@link EofFramed.windDown}), so it ends its user's stream at
   * a message boundary instead of losing it when this replica exits.
   */
  relayed(channel: EofFramed): void {
    this.#relayed.add(channel);
    channel.once("close", () => {
      if (this.#relayed.delete(channel)) { for (const h of this.#changeHandlers) h(); }
    });
  }

  /** Channels relayed for peers, open now. */
  get relaying(): number {
    return this.#relayed.size;
  }

  /** From now on responses ask clients to close their connections. */
  startDraining(): void {
    this.#draining = true;
  }

  /** Whether {@link InFlight.startDraining} was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Ordinary (not long-running) requests in flight. */
  get ordinary(): number {
    let n = 0;
    for (const t of this.#open) if (!t.longRunning) n++;
    return n;
  }

  /** Long-running requests and streams in flight. */
  get longRunning(): number {
    return this.#open.size - this.ordinary;
  }

  /** Milliseconds since the last request or stream started (Infinity if none ever did). */
  quietForMs(now = performance.now()): number {
    return this.#lastStart ? now - this.#lastStart : Infinity;
  }

  /** Calls `handler` whenever a request starts or ends; returns a function that unregisters it. */
  onChange(handler: () => void): () => void {
    this.#changeHandlers.add(handler);
    return () => this.#changeHandlers.delete(handler);
  }

  /**
   * Ends every long-running request and stream cleanly and asks the peers to wind down the channels
   * relayed for them; returns how many of this replica's own it ended.
   */
  endLongRunning(): number {
    const list = [...this.#open].filter((t) => t.longRunning);
    for (const t of list) t.end();
    for (const c of this.#relayed) c.windDown();
    return list.length;
  }

  #add(t: Tracked): void {
    this.#open.add(t);
    for (const h of this.#changeHandlers) h();
  }

  #remove(t: Tracked): void {
    if (!this.#open.delete(t)) return;
    for (const h of this.#changeHandlers) h();
  }
}
