/**
 * The user requests and streams a hub is serving, so a draining hub knows when the ordinary ones are
 * done and can end the long-running ones (watches, `logs -f`, exec, port-forward) cleanly at the end.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";

/** One tracked request or upgraded stream. */
interface Tracked {
  longRunning: boolean;
  /** Ends it in a way the client sees as a normal end. */
  end(): void;
}

/** Requests and upgraded streams in flight, counted ordinary vs long-running. */
export class InFlight {
  readonly #open = new Set<Tracked>();
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
        // A streamed body ends with its last chunk: a watch or `logs -f` client sees a normal end.
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
    // Ending our side lets what was written go out, then the connection closes (TCP FIN, not a reset).
    const t: Tracked = { longRunning: true, end: () => socket.end() };
    this.#add(t);
    socket.once("close", () => this.#remove(t));
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

  /** Ends every long-running request and stream cleanly; returns how many. */
  endLongRunning(): number {
    const list = [...this.#open].filter((t) => t.longRunning);
    for (const t of list) t.end();
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
