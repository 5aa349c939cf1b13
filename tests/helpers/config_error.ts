/** Assertions that a ConfigError was raised, with a message a person can act on. @module */

import assert from "node:assert/strict";
import { ConfigError } from "../../lib/config/mod.ts";

/** One expected part of an error message: a substring it holds, or a pattern it matches. */
export type MessagePart = string | RegExp;

function configErrorWith(parts: MessagePart[]): (e: unknown) => true {
  return (e) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    for (const p of parts) {
      if (typeof p === "string") assert.ok(e.message.includes(p), `'${e.message}' lacks '${p}'`);
      else assert.match(e.message, p);
    }
    return true;
  };
}

/** Asserts that `fn` throws a ConfigError whose message has every one of `parts`. */
export function expectConfigError(fn: () => unknown, ...parts: MessagePart[]): void {
  assert.throws(fn, configErrorWith(parts));
}

/** Asserts that `p` rejects with a ConfigError whose message has every one of `parts`. */
export async function expectConfigRejection(p: Promise<unknown>, ...parts: MessagePart[]): Promise<void> {
  await assert.rejects(p, configErrorWith(parts));
}
