/**
 * An HTTP/1.1 server fed with duplexes (SSH channels) instead of a listener of its own, as the agent's
 * endpoints are: each duplex is one kept-alive client connection.
 *
 * Deno 2.9.6's `node:http` server destroys a connection after each response when the server is not
 * `listening` (its reading of "the server is closing"), and a server handed its connections through
 * `emit("connection")` never is: every request through the hub closed its SSH channel, and the next one
 * waited for a new channel and a new HTTP client (measured: BENCHMARKS.md, round 2, session 3). Here
 * the server counts as listening until it is closed, so connections stay open between requests and
 * still end after their response once the server closed.
 * @module
 */

import type http from "node:http";
import type { Duplex } from "node:stream";

/** Connections handed to a server that never listens itself. */
export interface DuplexConnections {
  /** Serves HTTP on one more connection, kept alive between requests. */
  serve(duplex: Duplex): void;
  /** Closes the server: idle connections end now, busy ones after their response. */
  close(): void;
}

/** Hands connections to `server`; close it with the returned `close`, not `server.close()`. */
export function duplexConnections(server: http.Server): DuplexConnections {
  let closed = false;
  Object.defineProperty(server, "listening", { configurable: true, get: () => !closed });
  return {
    serve: (duplex) => void server.emit("connection", duplex),
    close: () => {
      closed = true;
      server.close();
    },
  };
}
