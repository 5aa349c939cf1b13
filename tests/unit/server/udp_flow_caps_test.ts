/** UDP LoadBalancer flow caps: per port, per sender (IPv6 by /64), per cluster; refusals counted and rate-limited. */

import assert from "node:assert/strict";
import { ClusterFlowCount, PortFlowLedger, refusalLogEveryMs } from "../../../lib/server/udp_flow_caps.ts";
import { UdpFlowBudget } from "../../../lib/agent/service_endpoints.ts";
import { logger, setLogSink } from "../../../lib/log/log.ts";

Deno.test("PortFlowLedger: each cap admits exactly its limit; releases make room; refusals are counted", () => {
  const lines: string[] = [];
  setLogSink((l) => void lines.push(l));
  try {
    const cluster = new ClusterFlowCount();
    const caps = { perPort: 6, perSource: 2, perCluster: 8 };
    const a = new PortFlowLedger(caps, cluster, logger());
    const b = new PortFlowLedger(caps, cluster, logger());
    const now = 1_000_000;
    // Per sender: two flows from one IPv4 address, and from one IPv6 /64 whatever the host part.
    const r1 = a.take("10.0.0.1", now)!;
    assert.ok(a.take("10.0.0.1", now));
    assert.equal(a.take("10.0.0.1", now), undefined);
    assert.ok(a.take("2001:db8:0:1::1", now) && a.take("2001:db8:0:1::2", now));
    assert.equal(a.take("2001:db8:0:1::3", now), undefined);
    // Per port: six.
    assert.ok(a.take("10.0.0.2", now) && a.take("10.0.0.3", now));
    assert.equal(a.open, 6);
    assert.equal(a.take("10.0.0.4", now), undefined);
    // Per cluster: the other port gets the remaining two of eight.
    assert.ok(b.take("10.0.1.1", now) && b.take("10.0.1.2", now));
    assert.equal(b.take("10.0.1.3", now), undefined);
    assert.deepEqual(a.refused, { perPort: 1, perSource: 2, perCluster: 0 });
    assert.deepEqual(b.refused, { perPort: 0, perSource: 0, perCluster: 1 });
    // A released flow makes room, once even if released twice.
    r1();
    r1();
    assert.equal(cluster.count, 7);
    assert.ok(b.take("10.0.1.3", now));
    assert.equal(b.take("10.0.1.4", now), undefined);
    // One report line per port per period, carrying how many were dropped since the last.
    assert.equal(lines.filter((l) => l.includes('"lb udp flows refused"')).length, 2);
    assert.equal(a.take("10.0.0.1", now + refusalLogEveryMs - 1) ?? "refused", "refused");
    assert.equal(lines.filter((l) => l.includes('"lb udp flows refused"')).length, 2);
    a.take("10.0.0.9", now + refusalLogEveryMs);
    const last = JSON.parse(lines.filter((l) => l.includes('"lb udp flows refused"')).at(-1)!);
    assert.equal(last.cap, "perCluster");
    assert.equal(last.droppedSinceLastReport, 4);
  } finally {
    setLogSink((l) => void Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")));
  }
});

Deno.test("UdpFlowBudget: the agent refuses flows past its cap and takes them again once given back", () => {
  const budget = new UdpFlowBudget(3);
  assert.deepEqual([budget.take(), budget.take(), budget.take(), budget.take()], [true, true, true, false]);
  budget.give();
  assert.equal(budget.take(), true);
  assert.equal(budget.take(), false);
});
