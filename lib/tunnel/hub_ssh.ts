/**
 * Hub side of the tunnel: the SSH server that agents log into over their WebSocket streams.
 * It authenticates agents (user = cluster, password = join token), records the endpoints each agent
 * publishes with streamlocal forwarding, opens channels to those endpoints, and runs the control stream.
 * It knows nothing about Kubernetes.
 * @module
 */

import type { Duplex } from "node:stream";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import type { Logger } from "../log/log.ts";
import { isEndpointName } from "../config/mod.ts";
import { sshAlgorithms } from "./ssh_algorithms.ts";
import { type ControlMessage, ControlStream, controlSubsystem } from "./control_stream.ts";
import { type AgentHello, type HubHello, parseAgentHello } from "./control_messages.ts";
import type { TunnelStream } from "./websocket_stream.ts";

/**
 * Bounds per agent session on what the hub holds for it. The defaults are {@link defaultAgentCaps}.
 */
export interface AgentCaps {
  /** Channel opens sent to the agent and not yet confirmed or refused by it. */
  pendingOpens: number;
  /** Channels open at once, counting pending opens. */
  openChannels: number;
  /** Endpoint names the agent may publish. */
  endpoints: number;
}

/**
 * Why these numbers:
 * - `pendingOpens` 256: a healthy agent answers an open within a round trip plus one dial of its target,
 *   so even a burst (the API channel reserve is 4 per cluster and auth mode; kubectl bursts 10) leaves
 *   only a handful pending. Hundreds pending means the agent or its targets hang; the hub's callbacks
 *   for them must not pile up, so further opens fail at once and the next agent is tried.
 * - `openChannels` 4096: above the UDP LoadBalancer per-cluster flow cap (2048, one channel a flow) plus
 *   a user's 500 open requests, so those finer caps bite first in normal use; this is the backstop
 *   against many users together. Each channel's buffered data is bounded by its SSH window.
 * - `endpoints` 10,000: the same bound as the endpoint list in the agent's hello.
 */
export const defaultAgentCaps: AgentCaps = { pendingOpens: 256, openChannels: 4096, endpoints: 10_000 };

/**
 * Tunnels accepted and not yet logged in, at most (the default of {@link SshHubOptions.maxLogins}). Each
 * costs a key exchange and a signature; thousands at once (every agent of a replica that just went away)
 * share the CPU so thinly that none finishes within the login timeout, and every retry adds to the pile.
 * A bound lets the logins under way finish; the rest are refused at once and dial again after their
 * jittered backoff (BENCHMARKS.md, issue 13).
 */
export const defaultMaxLogins = 128;

/** An open to an agent was refused by the hub itself: the session is at one of its {@link AgentCaps}. */
export class AgentAtCapError extends Error {
  override name = "AgentAtCapError";
}

/** Settings of the hub's SSH server. */
export interface SshHubOptions {
  /** Bounds per agent session; {@link defaultAgentCaps} when absent. */
  caps?: AgentCaps;
  /** The hub's host key, OpenSSH private key text. */
  hostKey: string;
  /** Decides whether `token` admits an agent of `cluster`; must take the same time whatever the answer. */
  authenticate(cluster: string, token: string, remoteAddress: string): Promise<boolean>;
  /** Called once per agent session after authentication. */
  onAgent(agent: AgentConnection): void;
  /** An unauthenticated connection is closed after this long. */
  handshakeTimeoutMs: number;
  /** Tunnels logging in at once, at most ({@link SshHub.atLoginCap}); {@link defaultMaxLogins} when absent. */
  maxLogins?: number;
  /** Keepalive interval; a silent agent is dropped after 3 intervals. */
  keepaliveMs: number;
  /** Receives every control message other than the hello. */
  onControl?(agent: AgentConnection, msg: ControlMessage): void;
  /** What the hub's hello says (asked each time one is sent, so the replica count is current). */
  hello(): Omit<HubHello, "type">;
  log: Logger;
}

let nextId = 0;

/** One authenticated agent session: its published endpoints, channels, and liveness. */
export class AgentConnection {
  /** Unique id within this hub process, e.g. `cluster-a#12`. */
  readonly id: string;
  /** Cluster the agent logged in as. */
  readonly cluster: string;
  readonly remoteAddress: string;
  readonly since = new Date();
  /** Endpoint names the agent published. */
  readonly endpoints = new Set<string>();
  /** What the agent said about itself in its hello (empty until it arrives). */
  hello: Partial<AgentHello> = {};
  /** Channels currently open, counting pending opens. */
  openChannels = 0;
  /** Channel opens sent and not yet answered by the agent. */
  pendingOpens = 0;
  readonly caps: AgentCaps;
  /** The keepalive interval the agent asked for (its hello), else the hub's. */
  keepaliveMs: number;
  #control: ControlStream | undefined;
  #closeHandlers = new Set<(reason: string) => void>();
  #closed = false;
  readonly #conn: ssh2.Connection;
  readonly #tunnel: TunnelStream;
  readonly #log: Logger;

  constructor(
    conn: ssh2.Connection,
    tunnel: TunnelStream,
    cluster: string,
    keepaliveMs: number,
    log: Logger,
    caps: AgentCaps = defaultAgentCaps,
  ) {
    this.caps = caps;
    this.#conn = conn;
    this.#tunnel = tunnel;
    this.cluster = cluster;
    this.id = `${cluster}#${++nextId}`;
    this.remoteAddress = tunnel.remoteAddress;
    this.keepaliveMs = keepaliveMs;
    this.#log = log.with({ agent: this.id });
  }

  /** Wire bytes received from and sent to this agent. */
  bytes(): { read: number; written: number } {
    return this.#tunnel.bytes();
  }

  /** True when the agent has been silent longer than 1.5 keepalive intervals. */
  isLate(now = Date.now()): boolean {
    return now - this.#tunnel.lastReceived() > this.keepaliveMs * 1.5;
  }

  /** Whether the session has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Opens a channel to an endpoint the agent published. Rejects when it did not publish it, when the
   * agent refuses (it could not dial its target), when the session is gone, and at once with
   * {@link AgentAtCapError} when the session is at its cap of pending opens or open channels.
   */
  openChannel(endpoint: string): Promise<Duplex> {
    if (this.#closed) return Promise.reject(new Error(`agent ${this.id} is disconnected`));
    if (!this.endpoints.has(endpoint)) {
      return Promise.reject(new Error(`agent ${this.id} does not publish endpoint '${endpoint}'`));
    }
    if (this.pendingOpens >= this.caps.pendingOpens) {
      return Promise.reject(
        new AgentAtCapError(
          `agent ${this.id} has ${this.pendingOpens} channel opens unanswered, the limit per agent`,
        ),
      );
    }
    if (this.openChannels >= this.caps.openChannels) {
      return Promise.reject(
        new AgentAtCapError(`agent ${this.id} has ${this.openChannels} channels open, the limit per agent`),
      );
    }
    this.openChannels++;
    this.pendingOpens++;
    return new Promise((resolve, reject) => {
      this.#conn.openssh_forwardOutStreamLocal(endpoint, (err, channel) => {
        this.pendingOpens--;
        if (err) {
          this.openChannels--;
          reject(new Error(`agent ${this.id} refused a channel to '${endpoint}': ${err.message}`));
          return;
        }
        channel.once("close", () => this.openChannels--);
        resolve(channel);
      });
    });
  }

  /** Sends a control message to the agent; false when the control stream is not up. */
  send(msg: ControlMessage): boolean {
    return this.#control?.send(msg) ?? false;
  }

  /** Ends the session. */
  close(reason: string): void {
    if (this.#closed) return;
    this.#log.info("agent session closing", { reason });
    this.#conn.end();
    // A peer that does not answer the disconnect must not keep the socket.
    setTimeout(() => this.#tunnel.ws.terminate(), 1000).unref?.();
    this.#markClosed(reason);
  }

  /** Registers a handler for the end of the session. */
  onClose(handler: (reason: string) => void): void {
    if (this.#closed) handler("closed");
    else this.#closeHandlers.add(handler);
  }

  /** @internal wiring done by SshHub */
  _attachControl(control: ControlStream): void {
    this.#control?.close();
    this.#control = control;
  }

  /** @internal */
  _markClosed(reason: string): void {
    this.#markClosed(reason);
  }

  #markClosed(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const h of this.#closeHandlers) h(reason);
    this.#closeHandlers.clear();
  }
}

/** The hub's SSH server; feed it tunnel streams with {@link SshHub.accept}. */
export class SshHub {
  readonly #server: ssh2.Server;
  readonly #opts: SshHubOptions;
  /** Streams injected into ssh2 whose SSH header has not arrived yet, by peer address. */
  readonly #pending = new Map<string, { tunnel: TunnelStream; timer: ReturnType<typeof setTimeout> }>();
  /** Tunnels accepted that have neither logged in nor closed. */
  readonly #loggingIn = new Set<TunnelStream>();

  constructor(opts: SshHubOptions) {
    this.#opts = opts;
    this.#server = new ssh2.Server({
      hostKeys: [opts.hostKey],
      algorithms: sshAlgorithms(),
      ident: "OpenSSH_9.9 tower",
      keepaliveInterval: opts.keepaliveMs,
      keepaliveCountMax: 2,
    }, (conn, info) => this.#onConnection(conn, info));
    this.#server.on("error", (e: Error) => opts.log.warn("ssh server error", { error: e }));
  }

  /** Tunnels accepted that have neither logged in nor closed yet. */
  get loggingIn(): number {
    return this.#loggingIn.size;
  }

  /**
   * Whether as many tunnels are logging in as the hub takes at once: the caller refuses a new one (before
   * its WebSocket upgrade), and the agent dials again after its backoff.
   */
  atLoginCap(): boolean {
    return this.#loggingIn.size >= (this.#opts.maxLogins ?? defaultMaxLogins);
  }

  /** Runs SSH over a freshly accepted tunnel stream; closes it if it does not authenticate in time. */
  accept(tunnel: TunnelStream): void {
    const key = `${tunnel.remoteAddress}|${tunnel.remotePort}`;
    this.#loggingIn.add(tunnel);
    const timer = setTimeout(() => {
      this.#opts.log.warn("tunnel closed before authentication", {
        remote: tunnel.remoteAddress,
        reason: "handshake timeout",
      });
      tunnel.ws.terminate();
    }, this.#opts.handshakeTimeoutMs);
    this.#pending.set(key, { tunnel, timer });
    tunnel.ws.once("close", () => {
      this.#loggingIn.delete(tunnel);
      clearTimeout(timer);
      if (this.#pending.get(key)?.tunnel === tunnel) this.#pending.delete(key);
    });
    this.#server.injectSocket(tunnel.stream as unknown as import("node:net").Socket);
  }

  #onConnection(conn: ssh2.Connection, info: ssh2.ClientInfo): void {
    const key = `${info.ip}|${info.port}`;
    const pending = this.#pending.get(key);
    const log = this.#opts.log.with({ remote: info.ip });
    if (!pending) {
      conn.end();
      return;
    }
    this.#pending.delete(key);
    const { tunnel, timer } = pending;
    let agent: AgentConnection | undefined;
    let cluster = "";
    conn.on("error", (e: Error & { level?: string }) => {
      log.debug("agent connection error", { error: e, level: e.level });
      // A keepalive timeout means the peer is gone or frozen: it will not answer a polite close.
      if (agent) agent.close(e.level === "client-timeout" ? "keepalive timeout" : e.message);
      else tunnel.ws.terminate();
    });
    conn.on("authentication", (ctx) => {
      if (ctx.method !== "password") {
        ctx.reject(["password"]);
        return;
      }
      cluster = ctx.username;
      this.#opts.authenticate(ctx.username, ctx.password, info.ip).then((ok) => {
        if (ok) {
          ctx.accept();
          return;
        }
        ctx.reject([]);
        // One try per connection: the agent reconnects with backoff, the throttle slows a guesser.
        setTimeout(() => conn.end(), 50);
      }, (e) => {
        log.error("agent authentication failed with an error", { error: e });
        ctx.reject([]);
        conn.end();
      });
    });
    conn.on("ready", () => {
      clearTimeout(timer);
      this.#loggingIn.delete(tunnel);
      agent = new AgentConnection(
        conn,
        tunnel,
        cluster,
        this.#opts.keepaliveMs,
        this.#opts.log,
        this.#opts.caps ?? defaultAgentCaps,
      );
      const a = agent;
      conn.on("request", (accept, reject, name, data) => this.#onRequest(a, accept, reject, name, data));
      // An agent opens one session, for the control stream; any other is refused while that one is open.
      let sessionOpen = false;
      conn.on("session", (acceptSession, rejectSession) => {
        if (sessionOpen) {
          this.#opts.log.warn("agent channel refused", {
            agent: a.id,
            channel: "session",
            reason: "one at a time",
          });
          rejectSession();
          return;
        }
        sessionOpen = true;
        const session = acceptSession();
        session.once("close", () => sessionOpen = false);
        session.on("subsystem", (accept, reject, sub) => {
          if (sub.name !== controlSubsystem) {
            reject?.();
            return;
          }
          const control = new ControlStream(accept());
          a._attachControl(control);
          control.onMessage((msg) => this.#onControl(a, msg));
        });
        // Nothing but the control subsystem is served.
        for (const kind of ["exec", "shell", "pty", "env", "x11", "auth-agent"] as const) {
          session.on(kind, (_accept: unknown, reject?: () => void) => reject?.());
        }
      });
      conn.on("tcpip", (_accept, reject) => reject());
      conn.on("openssh.streamlocal", (_accept, reject) => reject());
      this.#opts.onAgent(a);
    });
    conn.on("close", () => agent?._markClosed("connection closed"));
  }

  #onRequest(
    agent: AgentConnection,
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    name: string,
    data: unknown,
  ): void {
    const socketPath = (data as { socketPath?: unknown }).socketPath;
    if (
      name === "streamlocal-forward@openssh.com" && typeof socketPath === "string" &&
      isEndpointName(socketPath) &&
      (agent.endpoints.has(socketPath) || agent.endpoints.size < agent.caps.endpoints)
    ) {
      agent.endpoints.add(socketPath);
      accept?.();
      return;
    }
    if (name === "cancel-streamlocal-forward@openssh.com" && typeof socketPath === "string") {
      agent.endpoints.delete(socketPath);
      accept?.();
      return;
    }
    this.#opts.log.warn("agent request refused", { agent: agent.id, request: name });
    reject?.();
  }

  #onControl(agent: AgentConnection, msg: ControlMessage): void {
    if (msg.type === "hello") {
      try {
        agent.hello = parseAgentHello(msg);
      } catch (e) {
        this.#opts.log.warn("agent broke the control protocol", { agent: agent.id, error: e });
        agent.close(`malformed hello: ${(e as Error).message}`);
        return;
      }
      if (agent.hello.keepaliveMs) agent.keepaliveMs = agent.hello.keepaliveMs;
      agent.send({ type: "hello", ...this.#opts.hello() });
      return;
    }
    this.#opts.onControl?.(agent, msg);
  }
}
