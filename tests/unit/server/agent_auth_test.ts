/** Agent admission: constant-time token checks and slowing down addresses that keep failing. */

import assert from "node:assert/strict";
import { agentAuthenticator, FailureThrottle } from "../../../lib/server/agent_auth.ts";
import { addressBucket } from "../../../lib/server/address_bucket.ts";
import { emptyRegistry, hashToken, newToken } from "../../../lib/registry/mod.ts";
import { logger, setLogSink } from "../../../lib/log/log.ts";

Deno.test("FailureThrottle: no delay at first, doubling from 250 ms to an 8 s cap, forgotten on success", () => {
  const t = new FailureThrottle();
  const now = 1_000_000;
  assert.equal(t.delayFor("10.0.0.1", now), 0);
  const delays = [];
  for (let i = 0; i < 8; i++) {
    t.fail("10.0.0.1", now);
    delays.push(t.delayFor("10.0.0.1", now));
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
  assert.equal(t.delayFor("10.0.0.2", now), 0, "another address is not slowed");
  t.succeed("10.0.0.1");
  assert.equal(t.delayFor("10.0.0.1", now), 0);
});

Deno.test("FailureThrottle: failures are forgotten after a quiet period and the table stays bounded", () => {
  const t = new FailureThrottle({ maxEntries: 3, forgetAfterMs: 60_000 });
  t.fail("a", 0);
  assert.equal(t.delayFor("a", 30_000), 250);
  assert.equal(t.delayFor("a", 61_000), 0);
  for (const addr of ["b", "c", "d", "e"]) t.fail(addr, 0);
  assert.equal(t.delayFor("a", 1), 0, "the oldest entry was dropped to stay within 3");
  assert.equal(t.delayFor("e", 1), 250);
});

Deno.test("agentAuthenticator: right token admits; wrong token and unknown cluster are refused, slowed, never logged", async () => {
  const lines: string[] = [];
  setLogSink((l) => void lines.push(l));
  try {
    const token = newToken();
    const registry = emptyRegistry();
    registry.clusters.push({ name: "alpha", tokenHash: hashToken(token), createdAt: "" });
    const auth = agentAuthenticator(() => registry, logger());
    assert.equal(await auth("alpha", token, "10.1.1.1"), true);
    const wrong = newToken();
    assert.equal(await auth("alpha", wrong, "10.1.1.2"), false);
    const t0 = performance.now();
    assert.equal(await auth("nosuch", token, "10.1.1.2"), false);
    assert.ok(performance.now() - t0 >= 240, "the second failure from an address waits");
    const text = lines.join("\n");
    assert.match(text, /"reason":"wrong token"/);
    assert.match(text, /"reason":"unknown cluster"/);
    assert.ok(!text.includes(token) && !text.includes(wrong), "a token reached the log");
  } finally {
    setLogSink((l) => void Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")));
  }
});

Deno.test("addressBucket: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64 whatever the spelling", () => {
  const cases: [string, string][] = [
    ["10.1.2.3", "10.1.2.3"],
    ["::ffff:10.1.2.3", "10.1.2.3"],
    ["2001:db8:1:2::1", "2001:db8:1:2::/64"],
    ["2001:0db8:0001:0002:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"],
    ["2001:DB8:1:2:3:4:5:6", "2001:db8:1:2::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["64:ff9b::192.0.2.1", "64:ff9b:0:0::/64"],
    ["not-an-address", "not-an-address"],
  ];
  for (const [address, bucket] of cases) assert.equal(addressBucket(address), bucket, address);
});

Deno.test("FailureThrottle.attempt: a failing sender's parallel attempts queue one at a time, at most 4 wait", async () => {
  const t = new FailureThrottle();
  t.fail("2001:db8:1:2::/64");
  assert.equal(t.delayFor("2001:db8:1:2::/64"), 250);
  const order: number[] = [];
  let running = 0;
  let most = 0;
  // Six parallel attempts from addresses of one /64: four are checked in turn, two refused at once.
  const attempts = Array.from({ length: 6 }, (_, i) =>
    t.attempt(`2001:db8:1:2::${i + 1}`, (bucket) => {
      running++;
      most = Math.max(most, running);
      order.push(i);
      running--;
      t.fail(bucket);
      return i;
    }));
  assert.equal(t.waiting("2001:db8:1:2::99"), 4);
  const results = await Promise.all(attempts);
  assert.deepEqual(results, [0, 1, 2, 3, undefined, undefined]);
  assert.deepEqual(order, [0, 1, 2, 3]);
  assert.equal(most, 1);
  assert.equal(t.waiting("2001:db8:1:2::99"), 0, "the queue is gone once empty");
  // Another sender is not queued behind them.
  assert.equal(await t.attempt("2001:db8:9:9::1", () => "fresh"), "fresh");
});
