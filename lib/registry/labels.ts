/**
 * Cluster labels: keys and values with Kubernetes' syntax (so a label can be copied to and from a CRD's
 * metadata unchanged), and the `k=v` / `k-` edits that `cluster add --label` and `cluster label` take.
 * @module
 */

import { ConfigError } from "../config/mod.ts";

/** A cluster may carry at most this many labels. */
export const maxLabels = 64;

const labelName = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const dnsSubdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** What is wrong with a label key (`[PREFIX/]NAME`, as in Kubernetes), or undefined when nothing is. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf("/");
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length > 253 || !dnsSubdomain.test(prefix))) {
    return `label key '${key}': the prefix before '/' must be a DNS subdomain of at most 253 characters`;
  }
  if (!labelName.test(name)) {
    return `label key '${key}': the name must be 1-63 letters, digits, '-', '_' or '.', ` +
      "starting and ending with a letter or digit";
  }
  return undefined;
}

/** What is wrong with a label value (empty, or like a key's name part), or undefined when nothing is. */
export function labelValueProblem(value: string): string | undefined {
  if (value === "" || labelName.test(value)) return undefined;
  return `label value '${value}' must be empty or 1-63 letters, digits, '-', '_' or '.', ` +
    "starting and ending with a letter or digit";
}

/** What is wrong with a whole label map, or undefined when nothing is. */
export function labelsProblem(labels: unknown): string | undefined {
  if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
    return "labels must map keys to string values";
  }
  const entries = Object.entries(labels);
  if (entries.length > maxLabels) return `at most ${maxLabels} labels, got ${entries.length}`;
  for (const [k, v] of entries) {
    if (typeof v !== "string") return `label '${k}' must have a string value`;
    const problem = labelKeyProblem(k) ?? labelValueProblem(v);
    if (problem) return problem;
  }
  return undefined;
}

/** One edit of a cluster's labels: set a key to a value, or remove it. */
export type LabelEdit = { key: string; value: string } | { key: string; remove: true };

/** Parses `KEY=VALUE` (set) or `KEY-` (remove), as `kubectl label` takes them; throws with a clear message. */
export function parseLabelEdit(text: string, allowRemove: boolean): LabelEdit {
  const eq = text.indexOf("=");
  if (eq < 0) {
    if (allowRemove && text.endsWith("-")) {
      const key = text.slice(0, -1);
      const problem = labelKeyProblem(key);
      if (problem) throw new ConfigError(problem);
      return { key, remove: true };
    }
    throw new ConfigError(`label '${text}' must be KEY=VALUE${allowRemove ? " or KEY- (to remove it)" : ""}`);
  }
  const key = text.slice(0, eq);
  const value = text.slice(eq + 1);
  const problem = labelKeyProblem(key) ?? labelValueProblem(value);
  if (problem) throw new ConfigError(problem);
  return { key, value };
}

/** Applies edits to a label map in order and returns the new map (the input is not changed). */
export function applyLabelEdits(labels: Record<string, string>, edits: LabelEdit[]): Record<string, string> {
  const out = { ...labels };
  for (const e of edits) {
    if ("remove" in e) delete out[e.key];
    else out[e.key] = e.value;
  }
  return out;
}
