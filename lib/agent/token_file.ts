/**
 * A ServiceAccount token file, read without blocking the request path: the value in memory is used as
 * is, and once it is older than the refresh period a background read replaces it, so a rotated token is
 * picked up within about one period and no request waits on the disk.
 * @module
 */

import type { Logger } from "../log/log.ts";

/** A cached, self-refreshing token file. */
export class TokenFile {
  readonly #path: string;
  readonly #refreshMs: number;
  readonly #log: Logger;
  #token = "";
  #readAt = 0;
  #reading: Promise<string> | undefined;

  constructor(path: string, refreshMs: number, log: Logger) {
    this.#path = path;
    this.#refreshMs = refreshMs;
    this.#log = log;
  }

  /** Resolves with a token once one has been read (reads now if none has been yet). */
  async ready(): Promise<string> {
    return this.#token || await this.#read();
  }

  /** The token in memory (call {@link ready} first); starts a background re-read when it is stale. */
  current(now = Date.now()): string {
    if (now - this.#readAt > this.#refreshMs && !this.#reading) {
      this.#read().catch(() => {});
    }
    return this.#token;
  }

  #read(): Promise<string> {
    this.#reading ??= Deno.readTextFile(this.#path).then((text) => {
      this.#token = text.trim();
      this.#readAt = Date.now();
      return this.#token;
    }, (e) => {
      this.#log.error("service account token unreadable", { file: this.#path, error: e });
      // Keep the last good token; try again after another period.
      this.#readAt = Date.now();
      throw e;
    }).finally(() => this.#reading = undefined);
    return this.#reading;
  }
}
