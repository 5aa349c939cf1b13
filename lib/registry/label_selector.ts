/**
 * Kubernetes label selectors in their string form (`env in (prod,staging),tier!=canary,!legacy`), parsed
 * into requirements and matched against a cluster's labels. Access rules use them to select clusters.
 *
 * Supported: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1,v2)`, joined by commas, all of
 * which must hold. As in Kubernetes, `!=` and `notin` also hold when the key is absent.
 * @module
 */

import { ConfigError } from "../config/mod.ts";
import { labelKeyProblem, labelValueProblem } from "./labels.ts";

/** Longest selector accepted, in characters. */
export const maxSelectorLength = 4096;
/** Most requirements in one selector. */
export const maxRequirements = 32;
/** Most values in one `in`/`notin` set. */
export const maxSetValues = 64;

/** One requirement of a selector. */
export interface Requirement {
  key: string;
  op: "in" | "notin" | "exists" | "!exists";
  /** The values for `in`/`notin` (`=` is `in` one value, `!=` is `notin` one value); empty otherwise. */
  values: string[];
}

type Token = { kind: "word" | "!" | "=" | "!=" | "(" | ")" | ","; text: string; at: number };

function tokenize(text: string, fail: (what: string, at: number) => never): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === " " || ch === "\t") {
      i++;
    } else if (ch === "(" || ch === ")" || ch === ",") {
      tokens.push({ kind: ch, text: ch, at: i++ });
    } else if (ch === "=") {
      const two = text[i + 1] === "=";
      tokens.push({ kind: "=", text: two ? "==" : "=", at: i });
      i += two ? 2 : 1;
    } else if (ch === "!") {
      const ne = text[i + 1] === "=";
      tokens.push({ kind: ne ? "!=" : "!", text: ne ? "!=" : "!", at: i });
      i += ne ? 2 : 1;
    } else if (/[A-Za-z0-9._/-]/.test(ch)) {
      const start = i;
      while (i < text.length && /[A-Za-z0-9._/-]/.test(text[i]!)) i++;
      tokens.push({ kind: "word", text: text.slice(start, i), at: start });
    } else {
      fail(`unexpected character '${ch}'`, i);
    }
  }
  return tokens;
}

/**
 * Parses a selector. Throws a ConfigError that quotes the selector and says what was expected where. The
 * empty selector parses to no requirements (it selects everything); callers that must not grant
 * everything refuse it themselves.
 */
export function parseSelector(text: string): Requirement[] {
  const fail = (what: string, at: number): never => {
    throw new ConfigError(`cluster selector '${text}': ${what} at position ${at + 1}`);
  };
  if (text.length > maxSelectorLength) {
    throw new ConfigError(`cluster selector is ${text.length} characters; at most ${maxSelectorLength}`);
  }
  const tokens = tokenize(text, fail);
  let pos = 0;
  const end = text.length;
  const peek = () => tokens[pos];
  const expectKey = (): string => {
    const t = tokens[pos++];
    if (!t || t.kind !== "word") return fail("expected a label key", t?.at ?? end);
    const problem = labelKeyProblem(t.text);
    if (problem) fail(problem, t.at);
    return t.text;
  };
  const checkValue = (value: string, at: number) => {
    const problem = labelValueProblem(value);
    if (problem) fail(problem, at);
    return value;
  };
  const valueSet = (): string[] => {
    const open = tokens[pos++];
    if (!open || open.kind !== "(") return fail("expected '(' to start a set of values", open?.at ?? end);
    const values: string[] = [];
    for (;;) {
      const v = tokens[pos++];
      if (!v || v.kind !== "word") return fail("expected a value", v?.at ?? end);
      values.push(checkValue(v.text, v.at));
      if (values.length > maxSetValues) fail(`a set may hold at most ${maxSetValues} values`, v.at);
      const next = tokens[pos++];
      if (next?.kind === ")") return values;
      if (next?.kind !== ",") return fail("expected ',' or ')' in a set of values", next?.at ?? end);
    }
  };
  const requirement = (): Requirement => {
    if (peek()?.kind === "!") {
      pos++;
      return { key: expectKey(), op: "!exists", values: [] };
    }
    const key = expectKey();
    const t = peek();
    if (!t || t.kind === ",") return { key, op: "exists", values: [] };
    pos++;
    if (t.kind === "=" || t.kind === "!=") {
      // `k=` (nothing after, or a comma) selects an empty value, as in Kubernetes.
      const v = peek();
      const value = v?.kind === "word" ? (pos++, checkValue(v.text, v.at)) : "";
      return { key, op: t.kind === "=" ? "in" : "notin", values: [value] };
    }
    if (t.kind === "word" && (t.text === "in" || t.text === "notin")) {
      return { key, op: t.text, values: valueSet() };
    }
    return fail(`expected '=', '==', '!=', 'in' or 'notin' after '${key}'`, t.at);
  };
  const out: Requirement[] = [];
  if (tokens.length === 0) return out;
  for (;;) {
    out.push(requirement());
    if (out.length > maxRequirements) fail(`at most ${maxRequirements} requirements`, tokens[pos - 1]!.at);
    const t = tokens[pos++];
    if (!t) return out;
    if (t.kind !== ",") fail("expected ',' between requirements", t.at);
  }
}

/** True when `labels` satisfy every requirement. */
export function selectorMatches(requirements: Requirement[], labels: Record<string, string>): boolean {
  return requirements.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    switch (r.op) {
      case "exists":
        return has;
      case "!exists":
        return !has;
      case "in":
        return has && r.values.includes(labels[r.key]!);
      case "notin":
        return !has || !r.values.includes(labels[r.key]!);
    }
  });
}
