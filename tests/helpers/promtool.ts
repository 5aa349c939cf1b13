/**
 * promtool, Prometheus' own checker, built once per machine from the Go module proxy into the test tools
 * cache (tests/cluster/build.sh, wrapper module tests/cluster/gomod/promtool/), so metrics tests check
 * Tower's exposition with the parser Prometheus itself uses.
 * @module
 */

import { findGoTool } from "../cluster/bins.ts";

/** Runs `promtool check metrics` on `text`; returns its exit code and what it printed. */
export async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(await findGoTool("promtool"), {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}
