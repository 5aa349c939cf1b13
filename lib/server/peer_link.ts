/**
 * The peer link between hub replicas: HTTPS with mutual TLS on a port of its own, where both ends show a
 * certificate from the peer CA (see data_dir.ts `loadPeerCa`) whose common name is a replica identity.
 * A user's client certificate comes from the hub CA and fails the handshake; a peer certificate of a
 * replica that holds no live lease is refused too. Only this listener ever trusts identity sent by the
 * other side.
 *
 * Routes are not stored anywhere: a replica that has no session of a cluster asks the live peers which
 * of them hold one ({@link PeerRoutes}), so an answer always comes from the holder's own session table.
 * @module
 */

import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { isReplicaId } from "../config/mod.ts";
import { type CertPair, issueLeaf } from "./tls_material.ts";

/** This replica's side of the peer link: the peer CA certificate and its own peer certificate. */
export interface PeerIdentity {
  replicaId: string;
  /** The peer CA certificate (PEM): the only issuer trusted on the link. */
  ca: string;
  /** This replica's peer certificate and key (CN = replica id). */
  own: CertPair;
}

/** Issues this replica's peer certificate from the peer CA (renewed at every start). */
export async function peerIdentity(peerCa: CertPair, replicaId: string): Promise<PeerIdentity> {
  const own = await issueLeaf(peerCa, {
    commonName: replicaId,
    dnsNames: [replicaId],
    usage: "peer",
    validMs: 30 * 86_400_000,
  });
  return { replicaId, ca: peerCa.cert, own };
}

/** Handles a request from an authenticated peer; `peer` is its replica id. */
export type PeerRequestHandler = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  peer: string,
) => boolean;
/** Handles an upgrade from an authenticated peer. */
export type PeerUpgradeHandler = (
  req: http.IncomingMessage,
  socket: Duplex,
  head: Uint8Array,
  peer: string,
) => boolean;

/** Settings of {@link startPeerListener}. */
export interface PeerListenerOptions {
  host: string;
  port: number;
  identity: PeerIdentity;
  /** Whether `replicaId` holds a live lease now. */
  isLivePeer(replicaId: string): boolean;
  log: Logger;
}

/** The running peer listener. */
export interface PeerListener {
  port: number;
  /** Adds a route for authenticated peers' requests, tried in the order added. */
  route(handler: PeerRequestHandler): void;
  /** Adds a route for authenticated peers' upgrades. */
  upgrade(handler: PeerUpgradeHandler): void;
  close(): Promise<void>;
}

/** The replica id of an authenticated peer on `socket`, or a reason to refuse it. */
function peerOf(
  socket: tls.TLSSocket,
  isLive: (id: string) => boolean,
): { id: string } | { refused: string } {
  if (!socket.authorized) return { refused: `peer certificate not accepted: ${socket.authorizationError}` };
  const cn = socket.getPeerCertificate()?.subject?.CN;
  const id = Array.isArray(cn) ? undefined : cn;
  if (!isReplicaId(id)) return { refused: "peer certificate names no replica" };
  if (!isLive(id)) return { refused: `replica '${id}' holds no live lease` };
  return { id };
}

/** Starts the peer listener (mutual TLS against the peer CA only). */
export function startPeerListener(opts: PeerListenerOptions): Promise<PeerListener> {
  const routes: PeerRequestHandler[] = [];
  const upgrades: PeerUpgradeHandler[] = [];
  const log = opts.log.with({ component: "peer" });
  const server = https.createServer({
    cert: opts.identity.own.cert,
    key: opts.identity.own.key,
    ca: opts.identity.ca,
    requestCert: true,
    // The handshake itself fails for a certificate the peer CA did not sign (a user's, from the hub CA).
    rejectUnauthorized: true,
    ALPNProtocols: ["http/1.1"],
  }, (req, res) => {
    const peer = peerOf(req.socket as tls.TLSSocket, opts.isLivePeer);
    if ("refused" in peer) {
      log.warn("peer refused", { remote: req.socket.remoteAddress, reason: peer.refused });
      res.writeHead(403, { "content-type": "text/plain", connection: "close" }).end(peer.refused + "\n");
      return;
    }
    for (const r of routes) if (r(req, res, peer.id)) return;
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Uint8Array) => {
    socket.on("error", () => socket.destroy());
    const peer = peerOf(socket as tls.TLSSocket, opts.isLivePeer);
    if (!("refused" in peer)) { for (const u of upgrades) if (u(req, socket, head, peer.id)) return; }
    socket.end("HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  });
  server.on("secureConnection", (s: tls.TLSSocket) => s.setNoDelay(true));
  server.on("tlsClientError", (e: Error, s: tls.TLSSocket) => {
    log.warn("peer handshake refused", { remote: s.remoteAddress, error: e.message });
  });
  server.requestTimeout = 0;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        route: (h) => void routes.push(h),
        upgrade: (h) => void upgrades.push(h),
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections?.();
          }),
      });
    });
  });
}

/** TLS options for dialing peer `replicaId`: our peer certificate, the peer CA, and its identity checked. */
export function peerClientTls(identity: PeerIdentity, replicaId: string): https.RequestOptions {
  return {
    ca: identity.ca,
    cert: identity.own.cert,
    key: identity.own.key,
    // The peer is known by its replica id (its certificate's name), not by the address it listens on.
    servername: replicaId,
    checkServerIdentity: (_host, cert) =>
      cert.subject?.CN === replicaId
        ? undefined
        : new Error(`peer presents '${cert.subject?.CN}', not '${replicaId}'`),
  };
}
