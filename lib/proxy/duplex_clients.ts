/**
 * HTTP/1.1 clients over any duplex, kept alive between requests: the one client Tower uses for every
 * hop (hub → agent over an SSH channel, agent → API server over TLS, hub → Service, later hub → peer).
 *
 * The HTTP/1.1 client is undici's `Client` (framing, keep-alive, streaming, upgrades, backpressure); this
 * module only says where its connections come from. What plugs in is a {@link Dial}: a function that
 * returns a connected duplex and the *carrier* it runs on (the agent session of an SSH channel, for the
 * audit line; nothing for a TLS socket). Each client holds one connection at a time and carries one
 * request at a time, so the carrier of a request is the carrier of its client when the answer arrives.
 *
 * A connection whose duplex emits `windDownEvent` (a peer replica relaying it is draining) takes no
 * more requests: closed at once when idle, after its request otherwise; the request's proxy hears it
 * through {@link Lease.onWindDown} and ends a stream at its next message boundary.
 * @module
 */

import type { Duplex } from "node:stream";
import { Client, type Dispatcher } from "undici";
import { askedToWindDown, windDownEvent } from "../tunnel/mod.ts";

/** A connected duplex and what carries it. */
export interface Dialed<C> {
  duplex: Duplex;
  carrier: C;
}

/** Opens one connection for a client. It must resolve only once bytes may be written (TLS handshake done). */
export type Dial<C> = () => Promise<Dialed<C>>;

/** Options for {@link DuplexClients}. */
export interface DuplexClientsOptions<C> {
  dial: Dial<C>;
  /**
   * Whether a client's carrier may take another request (e.g. its agent is not draining): asked when a
   * request ends and when an idle client is taken.
   */
  usable?: (carrier: C) => boolean;
  /** Idle clients kept for reuse; more are closed when their request ends. */
  maxIdle?: number;
  /** How long an idle connection stays open, unless the server says less in `Keep-Alive`. */
  idleMs?: number;
}

/** One client, held for one request. */
export interface Lease<C> {
  readonly client: Dispatcher;
  /** Whether the client already carried a request (a stale connection may fail before any answer). */
  readonly reused: boolean;
  /** The carrier of the client's current connection, once it has one. */
  carrier(): C | undefined;
  /**
   * Calls `handler` when the client's connection is asked to wind down (at once if it already was), until
   * the lease is released.
   */
  onWindDown(handler: () => void): void;
  /** Gives the client back: kept for the next request when `reusable`, else closed. */
  release(reusable: boolean): void;
}

/** A client and what its current connection runs on. */
interface Slot<C> {
  client: Client;
  carrier: C | undefined;
  /** Whether the current connection was asked to wind down. */
  windingDown: boolean;
  /** The current lease's wind-down handler. */
  onWindDown: (() => void) | undefined;
}

/** Clients over connections from one {@link Dial}, one request each at a time, reused while alive. */
export class DuplexClients<C> {
  readonly #opts: DuplexClientsOptions<C>;
  readonly #idle: Slot<C>[] = [];
  #closed = false;

  constructor(opts: DuplexClientsOptions<C>) {
    this.#opts = opts;
  }

  /** Clients waiting for a request. */
  get idle(): number {
    return this.#idle.length;
  }

  /**
   * The most recently used idle client, else a new one (which dials on its first request). `fresh` skips
   * the idle ones: a request sent again after its kept-alive connection failed should not meet another
   * connection that died of the same cause (the agent session or peer behind them going away).
   */
  acquire(fresh = false): Lease<C> {
    let slot: Slot<C> | undefined;
    while (!fresh && (slot = this.#idle.pop())) {
      const usable = this.#opts.usable;
      if (slot.windingDown || (slot.carrier !== undefined && usable && !usable(slot.carrier))) {
        void slot.client.destroy().catch(() => {});
        continue;
      }
      return this.#lease(slot, true);
    }
    return this.#lease(this.#newSlot(), false);
  }

  /** Closes every idle client; leased ones close when given back. */
  close(): void {
    this.#closed = true;
    for (const s of this.#idle.splice(0)) void s.client.destroy().catch(() => {});
  }

  #lease(slot: Slot<C>, reused: boolean): Lease<C> {
    let released = false;
    return {
      client: slot.client,
      reused,
      carrier: () => slot.carrier,
      onWindDown: (handler) => {
        if (released) return;
        slot.onWindDown = handler;
        if (slot.windingDown) handler();
      },
      release: (reusable) => {
        if (released) return;
        released = true;
        slot.onWindDown = undefined;
        const usable = this.#opts.usable;
        const keep = reusable && !slot.windingDown && !this.#closed &&
          this.#idle.length < (this.#opts.maxIdle ?? 32) &&
          (slot.carrier === undefined || !usable || usable(slot.carrier));
        if (keep) {
          this.#idle.push(slot);
        } else void slot.client.destroy().catch(() => {});
      },
    };
  }

  #newSlot(): Slot<C> {
    const idleMs = this.#opts.idleMs ?? 60_000;
    const slot: Slot<C> = {
      client: undefined as unknown as Client,
      carrier: undefined,
      windingDown: false,
      onWindDown: undefined,
    };
    slot.client = new Client("http://upstream.invalid", {
      connect: (_options, callback) => {
        this.#opts.dial().then(({ duplex, carrier }) => {
          slot.carrier = carrier;
          // A reserved channel may have been asked before it became this connection.
          slot.windingDown = askedToWindDown(duplex);
          duplex.once(windDownEvent, () => {
            slot.windingDown = true;
            const idle = this.#idle.indexOf(slot);
            if (idle >= 0) {
              this.#idle.splice(idle, 1);
              void slot.client.destroy().catch(() => {});
            }
            slot.onWindDown?.();
          });
          readToEndOnDestroy(duplex);
          // undici takes any duplex; its types ask for a socket.
          callback(null, duplex as unknown as import("node:net").Socket);
        }, (e: Error) => callback(e, null));
      },
      // Watches, logs -f and exec streams have no time limit; idle connections do.
      headersTimeout: 0,
      bodyTimeout: 0,
      keepAliveTimeout: idleMs,
      keepAliveMaxTimeout: idleMs,
      pipelining: 1,
    });
    return slot;
  }
}

/**
 * undici stops reading a connection when it destroys it (after a HEAD request, an error, an abort) and
 * waits for its `close` before it dials again. An ssh2 channel on the hub's side reports `close` only
 * once its readable side ended, which a stream nobody reads never does: the client, and every request
 * queued on it, would wait forever. So a destroyed connection is read to its end (and the bytes dropped).
 */
function readToEndOnDestroy(duplex: Duplex): void {
  const destroy = duplex.destroy.bind(duplex);
  let draining = false;
  duplex.destroy = (error?: Error) => {
    if (!draining) {
      draining = true;
      // A `data` listener, not resume(): with undici's `readable` listener just removed, a resume() can be
      // undone on the next tick and the stream left paused (seen on an aborted watch).
      duplex.removeAllListeners("readable");
      duplex.on("data", () => {});
    }
    return destroy(error);
  };
}
