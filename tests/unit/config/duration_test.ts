/** Durations (`500ms`, `10s`, `2m`, bare seconds) and the message a person sees when one is wrong. @module */

import assert from "node:assert/strict";
import { parseDuration } from "../../../lib/config/mod.ts";
import { expectConfigError } from "../../helpers/config_error.ts";

Deno.test("parseDuration reads ms, s, m, h, d and bare seconds", () => {
  assert.equal(parseDuration("500ms", "--x"), 500);
  assert.equal(parseDuration("10s", "--x"), 10_000);
  assert.equal(parseDuration("2m", "--x"), 120_000);
  assert.equal(parseDuration("1h", "--x"), 3_600_000);
  assert.equal(parseDuration("1.5s", "--x"), 1500);
  assert.equal(parseDuration("3", "--x"), 3000);
  assert.equal(parseDuration(" 7s ", "--x"), 7000);
  assert.equal(parseDuration("7d", "--x"), 7 * 86_400_000);
});

Deno.test("parseDuration refuses garbage and zero with the flag in the message", () => {
  for (const bad of ["", "abc", "10 s", "-1s", "1w", "s", "1.s"]) {
    expectConfigError(() => parseDuration(bad, "--keepalive"), /^--keepalive: /, /is not a duration/);
  }
  expectConfigError(
    () => parseDuration("0s", "--backoff-max"),
    "--backoff-max: must be greater than zero, got '0s'",
  );
});
