/**
 * Runs every benchmark scenario with tiny sizes so the suite never rots. Asserts that each scenario
 * produced its rows with numbers in them — nothing about speed (that is what `deno task bench` is for).
 */

import assert from "node:assert/strict";
import { repoRoot, scratchDir } from "../helpers/tower_procs.ts";

Deno.test("deno task bench --smoke runs every scenario and writes JSON results", async () => {
  const out = await scratchDir("bench-smoke");
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "bench/main.ts", "--smoke", "--out", out],
      cwd: repoRoot,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout);
    assert.equal(r.code, 0, `bench failed:\n${text}\n${new TextDecoder().decode(r.stderr).slice(-2000)}`);
    const files = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) => n.endsWith(".json"));
    assert.equal(files.length, 1);
    const result = JSON.parse(await Deno.readTextFile(`${out}/${files[0]}`));
    assert.equal(result.machine.smoke, true);
    assert.ok(result.machine.cores > 0 && result.machine.cipher);
    const scenarios = new Set(result.rows.map((row: { scenario: string }) => row.scenario));
    for (
      const s of [
        "cipher",
        "throughput",
        "cpu",
        "fairness",
        "latency",
        "large list",
        "watch latency",
        "metrics",
        "scale",
        "rtt",
        "connect",
        "bulk",
        "ha",
      ]
    ) {
      assert.ok(scenarios.has(s), `no '${s}' rows in ${[...scenarios].join(", ")}`);
    }
    for (const row of result.rows) {
      const numbers = Object.values(row).filter((v) => typeof v === "number");
      assert.ok(
        numbers.length > 0 && numbers.every((n) => Number.isFinite(n as number)),
        JSON.stringify(row),
      );
    }
    const scale = result.rows.find((row: { scenario: string }) => row.scenario === "scale");
    assert.equal(scale.failed, 0, "agents that did not come back after the hub restart");
    const idle = result.rows.find((row: { scenario: string; clustersBack?: number }) =>
      row.scenario === "ha" && row.clustersBack !== undefined
    );
    assert.equal(idle.failed, 0, "sessions that did not come back after the rolling restart");
    assert.equal(idle.nonZeroExits, 0, "a replica that did not drain cleanly");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
