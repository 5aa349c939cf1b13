/** The agent's ServiceAccount token cache: first read awaited, later reads in the background. */

import assert from "node:assert/strict";
import { TokenFile } from "../../../lib/agent/token_file.ts";
import { logger, setLogSink } from "../../../lib/log/log.ts";
import { scratchDir } from "../../helpers/tower_procs.ts";

Deno.test("TokenFile: a rotated token is picked up in the background; a vanished file keeps the last good one", async () => {
  const lines: string[] = [];
  setLogSink((l) => void lines.push(l));
  const dir = await scratchDir("token");
  try {
    const path = `${dir}/token`;
    await Deno.writeTextFile(path, "first\n");
    const t = new TokenFile(path, 1000, logger());
    assert.equal(await t.ready(), "first");
    await Deno.writeTextFile(path, "second\n");
    // Fresh: no read at all. Stale: the old value now, the new one once the background read is done.
    assert.equal(t.current(), "first");
    const later = Date.now() + 2000;
    assert.equal(t.current(later), "first");
    for (let i = 0; i < 100 && t.current() !== "second"; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(t.current(), "second");
    await Deno.remove(path);
    t.current(Date.now() + 5000);
    for (let i = 0; i < 100 && !lines.some((l) => l.includes("token unreadable")); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(lines.some((l) => l.includes("token unreadable")));
    assert.equal(t.current(), "second");
  } finally {
    setLogSink((l) => void Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")));
    await Deno.remove(dir, { recursive: true });
  }
});
