/**
 * The WebSocket byte stream the SSH session runs over, on both ends (`npm:ws`: Deno's built-in client
 * leaves Nagle on, which costs ~40 ms per small message).
 * @module
 */

import type { IncomingMessage } from "node:http";
import { Duplex } from "node:stream";
import net from "node:net";
import tls from "node:tls";
import { Buffer } from "node:buffer";
// @ts-types="@types/ws"
import { WebSocket, WebSocketServer } from "ws";
import { dialTcp } from "./proxy_dial.ts";

/** WebSocket subprotocol spoken on the tunnel path. */
export const tunnelSubprotocol = "tower-tunnel.v1";

/** Largest WebSocket message accepted; SSH packets are far smaller, this only bounds garbage. */
const maxMessageBytes = 4 << 20;

/** One tunnel transport: the byte stream for SSH plus the facts about its peer. */
export interface TunnelStream {
  /** Bytes to and from the peer. */
  stream: Duplex;
  /** The WebSocket underneath (for closing and liveness). */
  ws: WebSocket;
  /** The peer's IP address. */
  remoteAddress: string;
  /** The peer's port. */
  remotePort: number;
  /**
   * Tunnel bytes received and sent so far: the SSH stream, without WebSocket or TLS framing. (Counted
   * here, not on the socket: over `wss://` Deno's TLS client leaves the TCP socket's counters at 0.)
   */
  bytes(): { read: number; written: number };
  /** Time of the last message received, in ms since the epoch. */
  lastReceived(): number;
}

/**
 * Writes smaller than this are gathered into one WebSocket message; a larger one is sent as a message of
 * its own, without a copy (measured: copying bulk data into bigger messages cost more CPU than the frames
 * it saved).
 */
export const maxCoalescedBytes = 16 << 10;

/**
 * Writes are acknowledged at once while fewer bytes than this are handed to `ws` and not yet written to
 * the socket; past it, the acknowledgement waits for the socket (ssh2 does not wait for it either way:
 * what bounds the bytes in flight are the SSH channel windows).
 */
export const maxUnsentBytes = 1 << 20;

/**
 * The WebSocket as a byte stream for ssh2. Small writes made in one run of JavaScript (up to the next
 * microtask checkpoint) go out as one WebSocket message: ssh2 writes each chacha20-poly1305 packet as
 * three pieces (length, body, MAC), which one by one became three WebSocket frames, three TLS records and
 * three `sendto` calls, the last two an event-loop turn after the first (BENCHMARKS.md, issue 16). A
 * message holds at most {@link maxCoalescedBytes}, or one larger write. Message boundaries mean nothing
 * to the reader: SSH is a byte stream.
 */
function webSocketDuplex(ws: WebSocket, counted: { read: number; written: number }): Duplex {
  /** Small writes waiting for the end of this run of JavaScript. */
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let flushQueued = false;
  /** Bytes handed to `ws` whose send has not completed. */
  let unsent = 0;
  /** A write's acknowledgement held back until the socket takes what is unsent. */
  let held: ((e?: Error | null) => void) | undefined;
  const release = (e?: Error | null) => {
    if (held && (e || unsent + pendingBytes < maxUnsentBytes)) {
      const cb = held;
      held = undefined;
      cb(e);
    }
  };
  const send = (data: Buffer) => {
    const n = data.length;
    unsent += n;
    counted.written += n;
    ws.send(data, { binary: true }, (e) => {
      unsent -= n;
      release(e);
    });
  };
  const flush = () => {
    flushQueued = false;
    if (!pendingBytes) return;
    const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    send(data);
  };
  const take = (chunks: Buffer[], cb: (e?: Error | null) => void) => {
    for (const c of chunks) {
      if (!c.length) continue;
      if (pendingBytes + c.length > maxCoalescedBytes) flush();
      if (c.length >= maxCoalescedBytes) {
        send(c);
        continue;
      }
      pending.push(c);
      pendingBytes += c.length;
    }
    if (pendingBytes && !flushQueued) {
      flushQueued = true;
      queueMicrotask(flush);
    }
    if (unsent + pendingBytes < maxUnsentBytes) cb();
    else held = cb;
  };
  const stream = new Duplex({
    allowHalfOpen: false,
    readableHighWaterMark: 1 << 20,
    read() {
      if (ws.isPaused) ws.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      take([chunk], cb);
    },
    writev(chunks, cb) {
      take(chunks.map((c) => c.chunk as Buffer), cb);
    },
    final(cb) {
      flush();
      ws.close();
      cb();
    },
    destroy(err, cb) {
      pending = [];
      pendingBytes = 0;
      ws.terminate();
      cb(err);
    },
  });
  ws.on("message", (data: Buffer) => {
    counted.read += data.length;
    // Past the stream's buffer, stop reading the socket; SSH windows bound what is in flight anyway.
    if (!stream.push(data)) ws.pause();
  });
  ws.once("close", () => stream.push(null));
  ws.on("error", (e: Error) => stream.destroy(e));
  return stream;
}

function toTunnelStream(ws: WebSocket, socket: net.Socket): TunnelStream {
  let lastReceived = Date.now();
  ws.on("message", () => void (lastReceived = Date.now()));
  const counted = { read: 0, written: 0 };
  const stream = webSocketDuplex(ws, counted);
  // ssh2 reads the peer address from its socket; this stream stands in for one.
  Object.assign(stream, { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
  stream.on("error", () => ws.terminate());
  return {
    stream,
    ws,
    remoteAddress: socket.remoteAddress ?? "unknown",
    remotePort: socket.remotePort ?? 0,
    bytes: () => ({ ...counted }),
    lastReceived: () => lastReceived,
  };
}

/** Hub side: a WebSocket server (no listener of its own) for the front door's tunnel path. */
export function tunnelWebSocketServer(): WebSocketServer {
  return new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: maxMessageBytes,
    handleProtocols: (offered) => offered.has(tunnelSubprotocol) ? tunnelSubprotocol : false,
  });
}

/** Hub side: completes an upgrade on the tunnel path and returns the stream. */
export function acceptTunnel(
  wss: WebSocketServer,
  req: IncomingMessage,
  socket: Duplex,
  head: Uint8Array,
): Promise<TunnelStream> {
  const raw = socket as net.Socket;
  raw.setNoDelay?.(true);
  return new Promise((resolve) => {
    wss.handleUpgrade(req, socket, Buffer.from(head), (ws) => resolve(toTunnelStream(ws, raw)));
  });
}

/** Agent side: how to reach the hub. */
export interface DialOptions {
  /** PEM CA bundle trusted for `wss://` (the hub's own CA); system roots are not used. */
  ca?: string | undefined;
  /** HTTP CONNECT proxy to go through. */
  proxy?: URL | undefined;
  /** Give up after this long. */
  timeoutMs?: number;
}

/**
 * The agent's frame mask: all zeros, which `ws` skips on both ends (no XOR pass over every byte, no copy
 * into a masked buffer). Masking (RFC 6455 §10.3) keeps script in a *browser* from steering the bytes an
 * intermediary sees; the agent is no browser and every frame it sends is SSH ciphertext, which nobody can
 * choose. Measured over wss, 512 MiB agent → hub: see BENCHMARKS.md.
 */
function unmasked(mask: Uint8Array): void {
  mask.fill(0);
}

/** Agent side: dials the hub's tunnel URL (`ws://` or `wss://`), through a proxy when given. */
export async function dialTunnel(url: URL, opts: DialOptions): Promise<TunnelStream> {
  const secure = url.protocol === "wss:";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || (secure ? 443 : 80));
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const tcp = await dialTcp(host, port, opts.proxy, timeoutMs);
  let socket: net.Socket = tcp;
  if (secure) {
    socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const t = tls.connect({
        socket: tcp,
        // The name the certificate must carry: without `host`, node:tls checks "localhost", whatever
        // address was dialed. SNI only for names (RFC 6066 forbids addresses).
        host,
        servername: net.isIP(host) ? undefined : host,
        ca: opts.ca,
        ALPNProtocols: ["http/1.1"],
      });
      t.once("secureConnect", () => {
        t.off("error", reject);
        resolve(t);
      });
      t.once("error", (e) => {
        tcp.destroy();
        reject(e);
      });
    });
  }
  return await new Promise<TunnelStream>((resolve, reject) => {
    const ws = new WebSocket(url, [tunnelSubprotocol], {
      createConnection: () => socket,
      perMessageDeflate: false,
      maxPayload: maxMessageBytes,
      handshakeTimeout: timeoutMs,
      generateMask: unmasked,
    });
    ws.once("open", () => {
      ws.off("error", reject);
      resolve(toTunnelStream(ws, tcp));
    });
    ws.once("error", (e) => {
      socket.destroy();
      reject(e);
    });
    ws.once("unexpected-response", (_req, res) => {
      socket.destroy();
      reject(new Error(`hub answered the tunnel upgrade with HTTP ${res.statusCode}`));
    });
  });
}
