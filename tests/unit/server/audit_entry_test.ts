/** Building the audit record of one request (lib/server/audit.ts `auditEntry`), case by case. */

import assert from "node:assert/strict";
import { auditEntry } from "../../../lib/server/audit.ts";
import { kubeRoute } from "../../../lib/server/kube_route.ts";

const ok = { status: 200, bytesIn: 0, bytesOut: 10, upgraded: false };

Deno.test("auditEntry names the verb, the routed path and the outcome", () => {
  const table: { method: string; url: string; want: { verb: string; path: string } }[] = [
    {
      method: "GET",
      url: "/clusters/a/api/v1/namespaces/ns/pods?limit=5",
      want: { verb: "list", path: "/api/v1/namespaces/ns/pods" },
    },
    {
      method: "GET",
      url: "/clusters/a/api/v1/namespaces/ns/pods/p",
      want: { verb: "get", path: "/api/v1/namespaces/ns/pods/p" },
    },
    {
      method: "GET",
      url: "/clusters/a/api/v1/pods?watch=true",
      want: { verb: "watch", path: "/api/v1/pods" },
    },
    {
      method: "POST",
      url: "/clusters/a/apis/apps/v1/namespaces/ns/deployments",
      want: { verb: "create", path: "/apis/apps/v1/namespaces/ns/deployments" },
    },
    {
      method: "DELETE",
      url: "/clusters/a/api/v1/namespaces/ns/configmaps/c",
      want: { verb: "delete", path: "/api/v1/namespaces/ns/configmaps/c" },
    },
    {
      method: "GET",
      url: "/clusters/a/services/ns/web:80/x?y=1",
      want: { verb: "proxy", path: "/services/ns/web:80/x" },
    },
  ];
  for (const { method, url, want } of table) {
    const e = auditEntry({ method, route: kubeRoute(url)!, started: 100, ended: 112.6, outcome: ok });
    assert.equal(e.verb, want.verb, url);
    assert.equal(e.path, want.path, url);
    assert.equal(e.cluster, "a");
    assert.equal(e.durationMs, 13);
  }
});

Deno.test("auditEntry carries who, carrier and remote, and adds via/upgraded/error/revoked only when set", () => {
  const route = kubeRoute("/clusters/a/api/v1/namespaces/ns/pods/p/exec")!;
  const plain = auditEntry({ method: "GET", route, started: 0, ended: 1, outcome: ok });
  assert.equal(plain.user, undefined);
  assert.equal("upgraded" in plain, false);
  assert.equal("error" in plain, false);
  assert.equal("via" in plain, false);
  assert.equal("revoked" in plain, false);
  const full = auditEntry({
    method: "POST",
    route,
    started: 0,
    ended: 1,
    outcome: { status: 101, bytesIn: 3, bytesOut: 4, upgraded: true, error: "reset" },
    who: { user: "dev1", groups: ["devs"] },
    agent: "agent-1",
    remote: "10.0.0.1",
    revoked: "user removed",
  });
  assert.deepEqual(full, {
    user: "dev1",
    groups: ["devs"],
    cluster: "a",
    method: "POST",
    verb: "create",
    path: "/api/v1/namespaces/ns/pods/p/exec",
    status: 101,
    bytesIn: 3,
    bytesOut: 4,
    durationMs: 1,
    agent: "agent-1",
    remote: "10.0.0.1",
    upgraded: true,
    error: "reset",
    revoked: "user removed",
  });
  const relayed = auditEntry({ method: "GET", route, started: 0, ended: 1, outcome: ok, via: "replica-b" });
  assert.equal(relayed.agent, undefined);
  assert.equal(relayed.via, "replica-b");
});
