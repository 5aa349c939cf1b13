/**
 * Agent side of the tunnel: the SSH client session over the WebSocket stream. It pins the hub's host
 * key, logs in as the cluster with its join token, publishes endpoints with streamlocal forwarding, and
 * serves only channels to endpoints it published — anything else is refused and logged, never dialed.
 * @module
 */

import type { Duplex } from "node:stream";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { routeEveryStreamLocalOpen } from "./ssh2_fixes.ts";
import type { Logger } from "../log/log.ts";
import { sshAlgorithms } from "./ssh_algorithms.ts";
import { fingerprintOfBlob } from "./fingerprint.ts";
import { type ControlMessage, ControlStream, controlSubsystem } from "./control_stream.ts";
import { type HubHello, parseHubHello } from "./control_messages.ts";
import type { TunnelStream } from "./websocket_stream.ts";

/**
 * Something the agent serves. `open` runs when the hub asks for a channel, before the channel is
 * accepted: it dials whatever it needs and returns the function that takes the accepted channel. If it
 * throws, the hub's channel open fails with the error, so the hub can try elsewhere.
 */
export interface Endpoint {
  open(): Promise<(channel: Duplex) => void>;
}

/** The hub presented a host key other than the pinned one. Not retryable: a configuration error. */
export class HostKeyMismatchError extends Error {
  override name = "HostKeyMismatchError";
  constructor(readonly expected: string, readonly actual: string) {
    super(`hub host key fingerprint is ${actual}, but the agent pins ${expected}; refusing to connect`);
  }
}

/** The hub refused the cluster name or token. */
export class AuthRefusedError extends Error {
  override name = "AuthRefusedError";
}

/** Settings for one agent SSH session. */
export interface AgentSshOptions {
  cluster: string;
  token: string;
  /** Pinned hub host key fingerprint (`SHA256:…`). */
  hubFingerprint: string;
  keepaliveMs: number;
  /** Sent to the hub in the control hello. */
  hello: Record<string, unknown>;
  log: Logger;
  /** Time allowed for the SSH handshake and login. */
  readyTimeoutMs?: number;
}

/** A live session with the hub. */
export class HubSession {
  readonly #client: ssh2.Client;
  readonly #endpoints = new Map<string, Endpoint>();
  readonly #log: Logger;
  #control: ControlStream | undefined;
  #controlHandlers = new Set<(msg: ControlMessage) => void>();
  /** Resolves with the reason when the session ends. */
  readonly closed: Promise<string>;
  /** The hub's hello; rejects when the hub sends a malformed one or the session ends before it. */
  readonly hubHello: Promise<HubHello>;
  #helloArrived: (hello: HubHello) => void = () => {};
  #helloFailed: (e: Error) => void = () => {};

  constructor(client: ssh2.Client, log: Logger, closed: Promise<string>) {
    this.#client = client;
    this.#log = log;
    this.closed = closed;
    this.hubHello = new Promise<HubHello>((resolve, reject) => {
      this.#helloArrived = resolve;
      this.#helloFailed = reject;
    });
    // Callers that never ask for the hello must not see an unhandled rejection.
    this.hubHello.catch(() => {});
    void closed.then((reason) =>
      this.#helloFailed(new Error(`session ended before the hub's hello: ${reason}`))
    );
    client.on("unix connection", (info, accept, reject) => this.#onChannel(info.socketPath, accept, reject));
    client.on("tcp connection", (info, _accept, reject) => {
      this.#log.warn("channel refused", {
        endpoint: `${info.destIP}:${info.destPort}`,
        reason: "not published",
      });
      reject();
    });
  }

  /** Publishes an endpoint under `name`; the hub may then open channels to it. */
  publish(name: string, endpoint: Endpoint): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#endpoints.set(name, endpoint);
      this.#client.openssh_forwardInStreamLocal(name, (err) => {
        if (err) {
          this.#endpoints.delete(name);
          reject(new Error(`hub refused to publish endpoint '${name}': ${err.message}`));
        } else resolve();
      });
    });
  }

  /** Withdraws a published endpoint; new channels to it are refused at once. */
  unpublish(name: string): Promise<void> {
    this.#endpoints.delete(name);
    return new Promise((resolve) => {
      this.#client.openssh_unforwardInStreamLocal(name, () => resolve());
    });
  }

  /** Sends a control message to the hub. */
  send(msg: ControlMessage): boolean {
    return this.#control?.send(msg) ?? false;
  }

  /** Registers a handler for control messages from the hub. */
  onControl(handler: (msg: ControlMessage) => void): void {
    this.#controlHandlers.add(handler);
  }

  /** Ends the session. */
  close(): void {
    this.#client.end();
  }

  /** @internal */
  _attachControl(control: ControlStream): void {
    this.#control = control;
    let helloSeen = false;
    control.onMessage((msg) => {
      if (msg.type === "hello" && !helloSeen) {
        helloSeen = true;
        try {
          this.#helloArrived(parseHubHello(msg));
        } catch (e) {
          this.#log.warn("hub broke the control protocol", { error: e });
          this.#helloFailed(e as Error);
          this.close();
        }
        return;
      }
      for (const h of this.#controlHandlers) h(msg);
    });
  }

  #onChannel(name: string, accept: () => Duplex, reject: () => void): void {
    const endpoint = this.#endpoints.get(name);
    if (!endpoint) {
      this.#log.warn("channel refused", { endpoint: name, reason: "not published" });
      reject();
      return;
    }
    endpoint.open().then((serve) => serve(accept()), (e) => {
      this.#log.warn("endpoint dial failed", { endpoint: name, error: e });
      reject();
    });
  }
}

/** Runs SSH over `tunnel`, logs in, opens the control stream. Rejects on any failure before that. */
export function connectHub(tunnel: TunnelStream, opts: AgentSshOptions): Promise<HubSession> {
  const client = new ssh2.Client();
  let mismatch: HostKeyMismatchError | undefined;
  let lastError: Error | undefined;
  const closed = new Promise<string>((resolve) => {
    client.once("close", () => resolve(lastError ? lastError.message : "connection closed"));
  });
  client.on("error", (e: Error) => void (lastError = e));
  return new Promise<HubSession>((resolve, reject) => {
    const fail = (e: Error & { level?: string }) => {
      client.end();
      tunnel.ws.terminate();
      if (mismatch) reject(mismatch);
      else if (e.level === "client-authentication") {
        reject(new AuthRefusedError(`hub refused cluster '${opts.cluster}' with the given token`));
      } else reject(e);
    };
    const closedDuringLogin = () => fail(lastError ?? new Error("hub closed the connection during login"));
    client.once("error", fail);
    client.once("close", closedDuringLogin);
    client.once("ready", () => {
      client.off("error", fail);
      // Only this listener: the one behind `closed` must stay, or the agent never notices a hang-up.
      client.off("close", closedDuringLogin);
      client.once("close", () => tunnel.ws.terminate());
      // After login every error ends the session; a silent hub (keepalive timeout) would never close it.
      client.on("error", () => tunnel.ws.terminate());
      const session = new HubSession(client, opts.log, closed);
      client.subsys(controlSubsystem, (err, channel) => {
        if (err) {
          opts.log.warn("control stream refused by hub", { error: err });
          client.end();
          reject(err);
          return;
        }
        const control = new ControlStream(channel);
        session._attachControl(control);
        control.send({ type: "hello", keepaliveMs: opts.keepaliveMs, ...opts.hello });
        resolve(session);
      });
    });
    client.connect({
      sock: tunnel.stream as unknown as import("node:stream").Readable,
      username: opts.cluster,
      password: opts.token,
      tryKeyboard: false,
      algorithms: sshAlgorithms(),
      hostVerifier: (key: Uint8Array) => {
        const actual = fingerprintOfBlob(key);
        if (actual === opts.hubFingerprint) return true;
        mismatch = new HostKeyMismatchError(opts.hubFingerprint, actual);
        return false;
      },
      keepaliveInterval: opts.keepaliveMs,
      keepaliveCountMax: 2,
      readyTimeout: opts.readyTimeoutMs ?? 20_000,
      strictVendor: false,
    });
    // Every channel open, published or not, goes to HubSession's handler, which refuses and logs.
    routeEveryStreamLocalOpen(client);
  });
}
