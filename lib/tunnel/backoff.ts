/** Reconnect delays: exponential backoff with full jitter. @module */

/** Settings for {@link Backoff}. */
export interface BackoffOptions {
  /** First delay ceiling in ms. */
  baseMs: number;
  /** Largest delay ceiling in ms. */
  capMs: number;
  /** A connection that lived at least this long resets the attempt count. */
  resetAfterMs: number;
  /** Source of randomness in [0, 1); tests pass their own. */
  random?: () => number;
}

/**
 * Delay calculator for reconnect loops. Each failed attempt doubles the ceiling up to `capMs`; the delay is
 * uniform in [0, ceiling) ("full jitter"), so many agents that lost the same hub spread out their returns.
 */
export class Backoff {
  #attempt = 0;
  readonly #opts: BackoffOptions;

  constructor(opts: BackoffOptions) {
    this.#opts = opts;
  }

  /** The delay before the next attempt; counts the attempt. */
  next(): number {
    const ceiling = Math.min(this.#opts.capMs, this.#opts.baseMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.floor((this.#opts.random ?? Math.random)() * ceiling);
  }

  /** Tells the backoff how long the last connection lived; a long enough life resets it. */
  connectionLived(ms: number): void {
    if (ms >= this.#opts.resetAfterMs) this.#attempt = 0;
  }

  /** Number of attempts since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }
}
