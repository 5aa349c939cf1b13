/**
 * Agent admission: checks a cluster name and join token against the registry in constant time, and
 * slows down senders that keep failing, one attempt at a time. Never logs the token.
 * @module
 */

import type { Logger } from "../log/log.ts";
import { decoyHash, type RegistryData, tokenMatches } from "../registry/mod.ts";
import { addressBucket } from "./address_bucket.ts";

/** Limits of a {@link FailureThrottle}. */
export interface ThrottleLimits {
  /** Senders whose failures are remembered; the oldest is forgotten past this. */
  maxEntries: number;
  /** Failures older than this are forgotten. */
  forgetAfterMs: number;
  /** Attempts of a failing sender that may wait their turn; more are refused at once. */
  maxWaiting: number;
}

/**
 * Failure memory per sender ({@link addressBucket}: an IPv4 address, an IPv6 /64), bounded in size. A
 * sender that has failed gets one attempt at a time, each after a delay that doubles with its failures:
 * parallel attempts queue instead of each waiting the same delay side by side, and past
 * `maxWaiting` queued attempts the rest are refused without a check. A sender with no failures is never
 * queued, so many agents behind one NAT address reconnect at once after a hub restart.
 */
export class FailureThrottle {
  readonly #failures = new Map<string, { count: number; last: number }>();
  readonly #queues = new Map<string, { waiting: number; tail: Promise<void> }>();
  readonly #limits: ThrottleLimits;

  /**
   * Defaults: 10,000 senders (a few hundred KiB); 10 minutes of memory; 4 waiting attempts — at the
   * 8 s delay cap a fourth waits 32 s, past the hub's 20 s login timeout, so more would only hold sockets.
   */
  constructor(limits: Partial<ThrottleLimits> = {}) {
    this.#limits = { maxEntries: 10_000, forgetAfterMs: 10 * 60_000, maxWaiting: 4, ...limits };
  }

  /** How long to wait before answering `bucket`: 0 at first, then doubling from 250 ms up to 8 s. */
  delayFor(bucket: string, now = Date.now()): number {
    const f = this.#failures.get(bucket);
    if (!f || now - f.last > this.#limits.forgetAfterMs) return 0;
    return Math.min(8000, 250 * 2 ** Math.min(f.count - 1, 5));
  }

  /** Records a failure from `bucket`; returns its failures in a row. */
  fail(bucket: string, now = Date.now()): number {
    const f = this.#failures.get(bucket);
    const count = f && now - f.last <= this.#limits.forgetAfterMs ? f.count + 1 : 1;
    this.#failures.delete(bucket);
    this.#failures.set(bucket, { count, last: now });
    if (this.#failures.size > this.#limits.maxEntries) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    return count;
  }

  /** Forgets `bucket` after a success. */
  succeed(bucket: string): void {
    this.#failures.delete(bucket);
  }

  /** Attempts from `address` now waiting or being checked. */
  waiting(address: string): number {
    return this.#queues.get(addressBucket(address))?.waiting ?? 0;
  }

  /**
   * Runs `check` for an attempt from `address` (given the sender's bucket) once the sender's turn has
   * come; resolves `undefined`, without running it, when too many of the sender's attempts already wait.
   */
  async attempt<T>(address: string, check: (bucket: string) => T): Promise<T | undefined> {
    const bucket = addressBucket(address);
    let queue = this.#queues.get(bucket);
    if (!queue && this.delayFor(bucket) === 0) return check(bucket);
    if (!queue) {
      // Every entry holds a waiting socket, so the login timeout bounds this table; the cap is a backstop.
      if (this.#queues.size >= this.#limits.maxEntries) return undefined;
      this.#queues.set(bucket, queue = { waiting: 0, tail: Promise.resolve() });
    }
    if (queue.waiting >= this.#limits.maxWaiting) return undefined;
    queue.waiting++;
    const before = queue.tail;
    let release = () => {};
    queue.tail = new Promise((r) => release = r);
    try {
      await before;
      const delay = this.delayFor(bucket);
      if (delay) await new Promise((r) => setTimeout(r, delay));
      return check(bucket);
    } finally {
      release();
      if (--queue.waiting === 0 && this.#queues.get(bucket) === queue) this.#queues.delete(bucket);
    }
  }
}

/** Builds the `authenticate` function for the SSH hub over the current registry contents. */
export function agentAuthenticator(
  registry: () => RegistryData,
  log: Logger,
  throttle = new FailureThrottle(),
): (cluster: string, token: string, address: string) => Promise<boolean> {
  return async (cluster, token, address) => {
    const verdict = await throttle.attempt(address, (bucket) => {
      const record = registry().clusters.find((c) => c.name === cluster);
      // Unknown clusters are compared against a decoy so both refusals cost the same.
      const ok = tokenMatches(token, record?.tokenHash ?? decoyHash) && record !== undefined;
      if (ok) {
        throttle.succeed(bucket);
        return { ok };
      }
      return { ok, reason: record ? "wrong token" : "unknown cluster", failures: throttle.fail(bucket) };
    });
    if (verdict?.ok) return true;
    // The reason is logged for the operator; the agent only ever hears "refused".
    log.warn("agent refused", {
      cluster,
      remote: address,
      reason: verdict?.reason ?? "too many attempts waiting from this address",
      ...(verdict ? { failuresFromAddress: verdict.failures } : {}),
    });
    return false;
  };
}
