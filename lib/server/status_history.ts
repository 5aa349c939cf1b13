/**
 * The short memory behind the status page: requests and errors per cluster in 10-second buckets over
 * the last 15 minutes, and the most recent refusals. Fixed sizes: clusters × 90 buckets, 50 refusals.
 * @module
 */

import { type AuditEntry, refusedByHub } from "./audit.ts";

/** Width of one bucket. */
export const bucketMs = 10_000;
/** Buckets kept: 15 minutes. */
export const bucketCount = 90;
/** Refusals kept. */
export const maxRefusals = 50;
/** Longest refusal reason kept, in characters. */
const maxReason = 200;

/** One refusal: a request, an agent login or a LoadBalancer flow the hub turned away. */
export interface Refusal {
  time: string;
  what: "request" | "agent" | "lb";
  cluster: string;
  /** HTTP status for requests; 0 for agents and flows. */
  code: number;
  /** Who, when known (requests only). */
  user: string | null;
  reason: string;
}

/** Per-second rates per bucket, oldest first, for one cluster. */
export interface RateSeries {
  /** Start of the oldest bucket (ms since the epoch). */
  from: number;
  requests: number[];
  errors: number[];
  /**
   * Rates over the last 10 s, sliding: the current bucket plus the part of the previous one still inside
   * the window. The newest bucket alone reads 0 right after every bucket boundary.
   */
  now: { requests: number; errors: number };
}

/** Request counts per cluster over time, and recent refusals. */
export class StatusHistory {
  readonly #counts = new Map<string, { requests: Float64Array; errors: Float64Array }>();
  /** Index (absolute bucket number) of the newest bucket written. */
  #head = Math.floor(Date.now() / bucketMs);
  readonly #refusals: Refusal[] = [];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.#head = Math.floor(now() / bucketMs);
  }

  /** Counts a finished request under its cluster label; a hub refusal is also kept as a refusal. */
  request(e: AuditEntry, cluster: string): void {
    const i = this.#advance();
    const c = this.#series(cluster);
    c.requests[i % bucketCount]! += 1;
    // Errors: the cluster could not be reached or answered with a server error.
    if (e.status === 0 || e.status >= 500) c.errors[i % bucketCount]! += 1;
    if (refusedByHub(e) && e.status >= 400) {
      this.refused({ what: "request", cluster, code: e.status, user: e.user ?? null, reason: e.error ?? "" });
    }
  }

  /** Keeps a refusal. */
  refused(r: Omit<Refusal, "time">): void {
    this.#refusals.push({
      ...r,
      user: r.user === null ? null : r.user.slice(0, 100),
      reason: r.reason.slice(0, maxReason),
      time: new Date(this.#now()).toISOString(),
    });
    if (this.#refusals.length > maxRefusals) this.#refusals.shift();
  }

  /** The most recent refusals, newest first. */
  refusals(): Refusal[] {
    return [...this.#refusals].reverse();
  }

  /** Per-second request and error rates of `cluster`, one value per bucket, oldest first. */
  rates(cluster: string): RateSeries {
    const head = this.#advance();
    const c = this.#counts.get(cluster);
    const requests: number[] = [];
    const errors: number[] = [];
    for (let b = head - bucketCount + 1; b <= head; b++) {
      requests.push((c?.requests[b % bucketCount] ?? 0) / (bucketMs / 1000));
      errors.push((c?.errors[b % bucketCount] ?? 0) / (bucketMs / 1000));
    }
    const through = (this.#now() % bucketMs) / bucketMs;
    const sliding = (series: number[]) => series.at(-1)! + series.at(-2)! * (1 - through);
    return {
      from: (head - bucketCount + 1) * bucketMs,
      requests,
      errors,
      now: { requests: sliding(requests), errors: sliding(errors) },
    };
  }

  /** Forgets a cluster that no longer exists. */
  forget(cluster: string): void {
    this.#counts.delete(cluster);
  }

  #series(cluster: string) {
    let c = this.#counts.get(cluster);
    if (!c) {
      c = { requests: new Float64Array(bucketCount), errors: new Float64Array(bucketCount) };
      this.#counts.set(cluster, c);
    }
    return c;
  }

  /** Moves the head to now, zeroing the buckets it passes; returns the current bucket number. */
  #advance(): number {
    const now = Math.floor(this.#now() / bucketMs);
    if (now > this.#head) {
      const steps = Math.min(now - this.#head, bucketCount);
      for (const c of this.#counts.values()) {
        for (let k = 1; k <= steps; k++) {
          c.requests[(this.#head + k) % bucketCount] = 0;
          c.errors[(this.#head + k) % bucketCount] = 0;
        }
      }
      this.#head = now;
    }
    return this.#head;
  }
}
