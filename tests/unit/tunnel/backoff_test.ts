/** Backoff: full-jitter delays, their cap, and the reset after a long-lived connection. @module */

import assert from "node:assert/strict";
import { Backoff } from "../../../lib/tunnel/backoff.ts";

Deno.test("Backoff: full jitter stays in [0, ceiling) and the ceiling doubles up to the cap", () => {
  let r = 0;
  const b = new Backoff({ baseMs: 100, capMs: 1000, resetAfterMs: 60_000, random: () => r });
  // random → 0 gives the floor of the range; random just under 1 gives just under the ceiling.
  const ceilings = [];
  for (let i = 0; i < 7; i++) {
    r = 0.999999;
    const top = b.next();
    ceilings.push(top + 1);
  }
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(b.attempts, 7);
  r = 0;
  assert.equal(b.next(), 0, "the range starts at 0");
  r = 0.5;
  assert.equal(b.next(), 500);
  for (let i = 0; i < 200; i++) {
    r = Math.random();
    const d = b.next();
    assert.ok(d >= 0 && d < 1000, `${d} out of [0, 1000)`);
    assert.ok(Number.isInteger(d));
  }
});

Deno.test("Backoff: huge attempt counts do not overflow the cap", () => {
  const b = new Backoff({ baseMs: 1000, capMs: 30_000, resetAfterMs: 60_000, random: () => 0.999999 });
  for (let i = 0; i < 2000; i++) assert.ok(b.next() < 30_000);
});

Deno.test("Backoff: a long-lived connection resets the attempts; a short one does not", () => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000, resetAfterMs: 60_000, random: () => 0.999999 });
  b.next();
  b.next();
  b.next();
  assert.equal(b.attempts, 3);
  b.connectionLived(59_999);
  assert.equal(b.attempts, 3);
  assert.equal(b.next(), 799, "still doubling after a short connection");
  b.connectionLived(60_000);
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 99, "back to the base ceiling");
});
