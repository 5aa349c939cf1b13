/**
 * Waiting for an event in tests, bounded in time: a condition that comes true, or a promise that settles.
 * (Sleeps are not synchronisation; these fail with what was awaited when the bound passes.)
 * @module
 */

/** Polls `check` until it returns without throwing, for at most `ms`; returns what it returned. */
export async function eventually<T>(ms: number, check: () => T | Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** `p`, or a rejection naming `what` after `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
