/** Routing of the hub's Kubernetes route (lib/server/kube_route.ts), case by case. */

import assert from "node:assert/strict";
import { auditPath, type KubeRoute, kubeRoute, Refusal } from "../../../lib/server/kube_route.ts";

const cases: { url: string; fixed?: string; want: KubeRoute | undefined | [400, RegExp] }[] = [
  { url: "/clusters/a/version", want: { cluster: "a", path: "/version" } },
  { url: "/clusters/a", want: { cluster: "a", path: "/" } },
  { url: "/clusters/a?x=1", want: { cluster: "a", path: "/?x=1" } },
  {
    url: "/clusters/a/api/v1/pods?watch=true&b=%2F",
    want: { cluster: "a", path: "/api/v1/pods?watch=true&b=%2F" },
  },
  // Dot segments are refused in the path, not in the query (values may hold anything).
  { url: "/clusters/a/api?x=../..", want: { cluster: "a", path: "/api?x=../.." } },
  { url: "/version", want: undefined },
  { url: "/cluster/a/version", want: undefined },
  { url: "/clustersX/a", want: undefined },
  { url: "/clusters/", want: [400, /'' is not a valid cluster name/] },
  { url: "/clusters/A_B/version", want: [400, /'A_B' is not a valid cluster name/] },
  { url: "/clusters/%61/version", want: [400, /not a valid cluster name/] },
  { url: "/clusters/a/../b/version", want: [400, /dot segments/] },
  { url: "/clusters/a/%2e%2e/b", want: [400, /dot segments/] },
  { url: "/clusters/a/api/%2Fetc", want: [400, /encoded slashes/] },
  { url: "/clusters/a/api/%5c", want: [400, /encoded slashes/] },
  { url: "/clusters/a/api/%zz", want: [400, /malformed percent-encoding/] },
  // A cluster's dedicated port: every path is that cluster's.
  { url: "/version", fixed: "solo", want: { cluster: "solo", path: "/version" } },
  { url: "/api/v1/pods?limit=1", fixed: "solo", want: { cluster: "solo", path: "/api/v1/pods?limit=1" } },
  { url: "/api/./x", fixed: "solo", want: [400, /dot segments/] },
  // Service ports.
  {
    url: "/clusters/a/services/ns/web:8080/healthz?x=1",
    want: { cluster: "a", path: "/healthz?x=1", service: { namespace: "ns", name: "web", port: "8080" } },
  },
  {
    url: "/clusters/a/services/ns/web:http",
    want: { cluster: "a", path: "/", service: { namespace: "ns", name: "web", port: "http" } },
  },
  {
    url: "/services/ns/web:80/x",
    fixed: "solo",
    want: { cluster: "solo", path: "/x", service: { namespace: "ns", name: "web", port: "80" } },
  },
  { url: "/clusters/a/services", want: [400, /service paths look like/] },
  { url: "/clusters/a/services/ns/web", want: [400, /service paths look like/] },
  { url: "/clusters/a/services/NS/web:80", want: [400, /service paths look like/] },
  { url: "/clusters/a/services/ns/web:0123456789abcdef", want: [400, /service paths look like/] },
  // Not a Service path: only the exact segment counts.
  { url: "/clusters/a/servicesx/y", want: { cluster: "a", path: "/servicesx/y" } },
];

for (const c of cases) {
  Deno.test(`kubeRoute ${c.url}${c.fixed ? ` on ${c.fixed}'s port` : ""}`, () => {
    if (Array.isArray(c.want)) {
      const [code, message] = c.want;
      assert.throws(() => kubeRoute(c.url, c.fixed), (e: unknown) => {
        assert.ok(e instanceof Refusal);
        assert.equal(e.code, code);
        assert.match(e.message, message);
        return true;
      });
    } else assert.deepEqual(kubeRoute(c.url, c.fixed), c.want);
  });
}

Deno.test("auditPath keeps the Service prefix and drops the query", () => {
  const table: [string, string][] = [
    ["/clusters/a/api/v1/pods?limit=1", "/api/v1/pods"],
    ["/clusters/a/services/ns/web:80/x/y?z=1", "/services/ns/web:80/x/y"],
    ["/clusters/a/services/ns/web:http", "/services/ns/web:http"],
  ];
  for (const [url, want] of table) assert.equal(auditPath(kubeRoute(url)!), want, url);
});
