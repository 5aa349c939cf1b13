/**
 * Agent admission: checks a cluster name and join token against the registry in constant time, and
 * slows down addresses that keep failing. Never logs the token.
 * @module
 */

import type { Logger } from "../log/log.ts";
import { decoyHash, type RegistryData, tokenMatches } from "../registry/mod.ts";

/** Per-address failure memory, bounded in size. */
export class FailureThrottle {
  readonly #failures = new Map<string, { count: number; last: number }>();
  readonly #maxEntries: number;
  readonly #forgetAfterMs: number;

  constructor(maxEntries = 10_000, forgetAfterMs = 10 * 60_000) {
    this.#maxEntries = maxEntries;
    this.#forgetAfterMs = forgetAfterMs;
  }

  /** How long to wait before answering `address`: 0 at first, then doubling from 250 ms up to 8 s. */
  delayFor(address: string, now = Date.now()): number {
    const f = this.#failures.get(address);
    if (!f || now - f.last > this.#forgetAfterMs) return 0;
    return Math.min(8000, 250 * 2 ** Math.min(f.count - 1, 5));
  }

  /** Records a failure from `address`. */
  fail(address: string, now = Date.now()): number {
    const f = this.#failures.get(address);
    const count = f && now - f.last <= this.#forgetAfterMs ? f.count + 1 : 1;
    this.#failures.delete(address);
    this.#failures.set(address, { count, last: now });
    if (this.#failures.size > this.#maxEntries) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    return count;
  }

  /** Forgets `address` after a success. */
  succeed(address: string): void {
    this.#failures.delete(address);
  }
}

/** Builds the `authenticate` function for the SSH hub over the current registry contents. */
export function agentAuthenticator(
  registry: () => RegistryData,
  log: Logger,
  throttle = new FailureThrottle(),
): (cluster: string, token: string, address: string) => Promise<boolean> {
  return async (cluster, token, address) => {
    const delay = throttle.delayFor(address);
    if (delay) await new Promise((r) => setTimeout(r, delay));
    const record = registry().clusters.find((c) => c.name === cluster);
    // Unknown clusters are compared against a decoy so both refusals cost the same.
    const ok = tokenMatches(token, record?.tokenHash ?? decoyHash) && record !== undefined;
    if (ok) {
      throttle.succeed(address);
      return true;
    }
    const failures = throttle.fail(address);
    // The reason is logged for the operator; the agent only ever hears "refused".
    log.warn("agent refused", {
      cluster,
      remote: address,
      reason: record ? "wrong token" : "unknown cluster",
      failuresFromAddress: failures,
    });
    return false;
  };
}
