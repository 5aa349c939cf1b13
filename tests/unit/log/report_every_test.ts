/** ReportEvery (lib/log/report_every.ts): the first event at once, then one report per interval with the count. */

import assert from "node:assert/strict";
import { ReportEvery } from "../../../lib/log/report_every.ts";

Deno.test("report every: the first at once, then at most one per interval, counting what it held back", () => {
  const r = new ReportEvery(10_000);
  assert.equal(r.count(1_000), 1);
  assert.equal(r.count(2_000), undefined);
  assert.equal(r.count(10_999), undefined);
  assert.equal(r.count(11_000), 3, "the two held back and this one");
  assert.equal(r.count(11_001), undefined);
  assert.equal(r.count(50_000), 2);
});
