/** Label selectors: the grammar, clear errors with positions, Kubernetes matching semantics, bounds. @module */

import assert from "node:assert/strict";
import { ConfigError } from "../../../lib/config/mod.ts";
import {
  maxRequirements,
  maxSelectorLength,
  maxSetValues,
  parseSelector,
  type Requirement,
  selectorMatches,
} from "../../../lib/registry/mod.ts";

const parses: [string, Requirement[]][] = [
  ["", []],
  ["env", [{ key: "env", op: "exists", values: [] }]],
  ["!legacy", [{ key: "legacy", op: "!exists", values: [] }]],
  ["env=prod", [{ key: "env", op: "in", values: ["prod"] }]],
  ["env==prod", [{ key: "env", op: "in", values: ["prod"] }]],
  ["env != prod", [{ key: "env", op: "notin", values: ["prod"] }]],
  ["env=", [{ key: "env", op: "in", values: [""] }]],
  ["env in (prod,staging)", [{ key: "env", op: "in", values: ["prod", "staging"] }]],
  ["env in ( prod , staging )", [{ key: "env", op: "in", values: ["prod", "staging"] }]],
  ["env notin (dev)", [{ key: "env", op: "notin", values: ["dev"] }]],
  ["example.com/team=sre", [{ key: "example.com/team", op: "in", values: ["sre"] }]],
  ["in in (in)", [{ key: "in", op: "in", values: ["in"] }]],
  [
    "env in (prod,staging),region=eu,!legacy,tier",
    [
      { key: "env", op: "in", values: ["prod", "staging"] },
      { key: "region", op: "in", values: ["eu"] },
      { key: "legacy", op: "!exists", values: [] },
      { key: "tier", op: "exists", values: [] },
    ],
  ],
];

for (const [text, want] of parses) {
  Deno.test(`parseSelector '${text}'`, () => assert.deepEqual(parseSelector(text), want));
}

const errors: [string, RegExp][] = [
  ["env in prod", /expected '\(' to start a set of values at position 8/],
  ["env in ()", /expected a value at position 9/],
  ["env in (a b)", /expected ',' or '\)' in a set of values at position 11/],
  ["env in (a,", /expected a value at position 11/],
  ["env > 3", /unexpected character '>' at position 5/],
  ["env prod", /expected '=', '==', '!=', 'in' or 'notin' after 'env' at position 5/],
  ["env=prod staging", /expected ',' between requirements at position 10/],
  ["env=prod,", /expected a label key at position 10/],
  [",env", /expected a label key at position 1/],
  ["!", /expected a label key at position 2/],
  ["-bad=x", /label key '-bad'.*name must be 1-63/],
  ["Bad.Prefix/x=y", /prefix before '\/' must be a DNS subdomain/],
  ["env=-x", /label value '-x' must be empty or 1-63/],
  ["env in (ok,x_)", /label value 'x_'/],
];

for (const [text, want] of errors) {
  Deno.test(`parseSelector refuses '${text}' with a clear message`, () => {
    assert.throws(() => parseSelector(text), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.ok(e.message.startsWith(`cluster selector '${text}': `), e.message);
      assert.match(e.message, want);
      return true;
    });
  });
}

Deno.test("parseSelector bounds: length, requirements and set size, each accepted at the bound and refused past it", () => {
  const reqs = (n: number) => Array.from({ length: n }, (_, i) => `k${i}`).join(",");
  assert.equal(parseSelector(reqs(maxRequirements)).length, maxRequirements);
  assert.throws(() => parseSelector(reqs(maxRequirements + 1)), /at most 32 requirements/);
  const set = (n: number) => `env in (${Array.from({ length: n }, (_, i) => `v${i}`).join(",")})`;
  assert.equal(parseSelector(set(maxSetValues))[0]!.values.length, maxSetValues);
  assert.throws(() => parseSelector(set(maxSetValues + 1)), /at most 64 values/);
  const long = (n: number) => "a=b" + " ".repeat(n - 3);
  assert.deepEqual(parseSelector(long(maxSelectorLength)), [{ key: "a", op: "in", values: ["b"] }]);
  assert.throws(() => parseSelector(long(maxSelectorLength + 1)), /4097 characters; at most 4096/);
});

const matches: [string, Record<string, string>, boolean][] = [
  ["", {}, true],
  ["env", { env: "" }, true],
  ["env", {}, false],
  ["!env", {}, true],
  ["!env", { env: "prod" }, false],
  ["env=prod", { env: "prod" }, true],
  ["env=prod", { env: "dev" }, false],
  ["env=prod", {}, false],
  ["env!=prod", { env: "dev" }, true],
  ["env!=prod", {}, true], // as in Kubernetes: absent keys satisfy != and notin
  ["env!=prod", { env: "prod" }, false],
  ["env in (prod,staging)", { env: "staging" }, true],
  ["env in (prod,staging)", { env: "dev" }, false],
  ["env in (prod,staging)", {}, false],
  ["env notin (prod,staging)", { env: "dev" }, true],
  ["env notin (prod,staging)", {}, true],
  ["env notin (prod,staging)", { env: "prod" }, false],
  ["env=", { env: "" }, true],
  ["env=", { env: "x" }, false],
  ["env=prod,region=eu", { env: "prod", region: "eu" }, true],
  ["env=prod,region=eu", { env: "prod", region: "us" }, false],
  ["toString", {}, false], // keys are looked up as own properties only
];

for (const [text, labels, want] of matches) {
  Deno.test(`selector '${text}' on ${JSON.stringify(labels)} is ${want}`, () => {
    assert.equal(selectorMatches(parseSelector(text), labels), want);
  });
}
