/**
 * Counting events that would flood a log (refusals in a storm) and saying when to report them: the
 * first at once, then at most once per interval, with how many happened since the last report.
 * @module
 */

/** A counter that lets one report through per interval. */
export class ReportEvery {
  readonly #everyMs: number;
  #last = -Infinity;
  #unreported = 0;

  constructor(everyMs: number) {
    this.#everyMs = everyMs;
  }

  /**
   * Counts one event at `now` (ms); returns how many to report (this one included) when a report is due,
   * else undefined.
   */
  count(now = Date.now()): number | undefined {
    this.#unreported++;
    if (now - this.#last < this.#everyMs) return undefined;
    const n = this.#unreported;
    this.#last = now;
    this.#unreported = 0;
    return n;
  }
}
