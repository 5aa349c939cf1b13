/** The hub's lb-status is validated by the agent before anything of it reaches a Service status. */

import assert from "node:assert/strict";
import { parseLbStatus } from "../../../lib/agent/service_controller.ts";

Deno.test("lb-status (hub → agent): only well-formed values reach a Service status", () => {
  const ok = parseLbStatus({
    type: "lb-status",
    address: { ip: "203.0.113.7" },
    services: [{
      service: "lb/echo",
      ports: [{ port: 80, protocol: "TCP", publicPort: 31871 }, {
        port: 53,
        protocol: "UDP",
        error: "no free",
      }],
    }],
  });
  assert.deepEqual(ok?.address, { ip: "203.0.113.7" });
  assert.equal(ok?.services[0]?.ports.length, 2);
  assert.deepEqual(parseLbStatus({ type: "lb-status", address: { hostname: "lb.example.com" } })?.address, {
    hostname: "lb.example.com",
  });
  const bad: Record<string, unknown>[] = [
    { address: { ip: "not an ip; rm -rf" } },
    { address: { hostname: "bad host/name" } },
    { services: "x" },
    { services: [{ service: "../etc", ports: [] }] },
    { services: [{ service: "lb/echo", ports: [{ port: 0, protocol: "TCP" }] }] },
    { services: [{ service: "lb/echo", ports: [{ port: 80, protocol: "SCTP" }] }] },
    { services: [{ service: "lb/echo", ports: [{ port: 80, protocol: "TCP", publicPort: 70000 }] }] },
    { services: [{ service: "lb/echo", ports: [{ port: 80, protocol: "TCP", error: "e".repeat(1025) }] }] },
    { services: Array.from({ length: 10_001 }, () => ({ service: "lb/echo", ports: [] })) },
  ];
  for (const b of bad) {
    assert.equal(parseLbStatus({ type: "lb-status", ...b }), undefined, JSON.stringify(b).slice(0, 80));
  }
});
