/**
 * The control stream: JSON lines on one SSH `session` channel (subsystem {@link controlSubsystem}).
 * Carries what hub and agent must tell each other beyond endpoints: the agent's hello (version, id,
 * keepalive, capabilities), the hub's hello, and requests such as "reconnect now".
 * @module
 */

import type { Duplex } from "node:stream";

/** SSH subsystem name the agent requests for the control stream. */
export const controlSubsystem = "tower-control@tower";

/** Longest accepted control line; anything longer is a protocol error. */
const maxLineBytes = 1 << 20;

/** A control message: a JSON object with a `type`. */
export interface ControlMessage {
  type: string;
  [field: string]: unknown;
}

/** Reads and writes JSON-line messages on a channel. */
export class ControlStream {
  readonly #channel: Duplex;
  #buffered = "";
  #handlers = new Set<(msg: ControlMessage) => void>();
  #closeHandlers = new Set<(error?: Error) => void>();
  #closed = false;

  constructor(channel: Duplex) {
    this.#channel = channel;
    channel.setEncoding("utf8");
    channel.on("data", (text: string) => this.#onText(text));
    channel.once("close", () => this.#close());
    channel.once("error", (e: Error) => this.#close(e));
  }

  /** Sends one message; false when the stream is already closed. */
  send(msg: ControlMessage): boolean {
    if (this.#closed) return false;
    this.#channel.write(JSON.stringify(msg) + "\n");
    return true;
  }

  /** Registers a handler for every message received. */
  onMessage(handler: (msg: ControlMessage) => void): void {
    this.#handlers.add(handler);
  }

  /** Registers a handler for the end of the stream. */
  onClose(handler: (error?: Error) => void): void {
    if (this.#closed) handler();
    else this.#closeHandlers.add(handler);
  }

  /** Closes the stream. */
  close(): void {
    this.#channel.end();
    this.#channel.destroy();
  }

  #onText(text: string): void {
    this.#buffered += text;
    if (this.#buffered.length > maxLineBytes) {
      this.#channel.destroy(new Error("control line too long"));
      return;
    }
    let nl: number;
    while ((nl = this.#buffered.indexOf("\n")) >= 0) {
      const line = this.#buffered.slice(0, nl);
      this.#buffered = this.#buffered.slice(nl + 1);
      if (!line.trim()) continue;
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        this.#channel.destroy(new Error("control line is not JSON"));
        return;
      }
      if (!msg || typeof msg !== "object" || typeof (msg as ControlMessage).type !== "string") {
        this.#channel.destroy(new Error("control message has no type"));
        return;
      }
      for (const h of this.#handlers) h(msg as ControlMessage);
    }
  }

  #close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const h of this.#closeHandlers) h(error);
    this.#closeHandlers.clear();
  }
}
