/** The headers that cross the hub (lib/server/identity_headers.ts), case by case. */

import assert from "node:assert/strict";
import { authModeHeader, identityHeaders, serviceHeaders } from "../../../lib/server/identity_headers.ts";
import type { Identity } from "../../../lib/server/user_auth.ts";

const who: Identity = {
  user: "dev1",
  groups: ["devs", "system:authenticated"],
  extra: { "example.com/team": ["blue"], empty: [] },
  via: "token",
};

/** Raw headers as a client sent them, including every kind the hub must not pass on. */
const raw = [
  "Host",
  "hub:443",
  "Authorization",
  "Bearer user-token",
  "Impersonate-User",
  "system:admin",
  "Impersonate-Group",
  "system:masters",
  "Impersonate-Extra-Scopes",
  "x",
  "Impersonate-Uid",
  "1",
  "X-Tower-Auth-Mode",
  "passthrough",
  "Connection",
  "keep-alive, X-Secret-Hop",
  "X-Secret-Hop",
  "1",
  "Accept",
  "application/json",
  "X-Stream-Protocol-Version",
  "v5.channel.k8s.io",
  "X-Stream-Protocol-Version",
  "v4.channel.k8s.io",
];

Deno.test("impersonate mode: client credentials and impersonation replaced by the hub's identity", () => {
  assert.deepEqual(identityHeaders(raw, "impersonate", who), {
    host: "hub:443",
    accept: "application/json",
    "x-stream-protocol-version": ["v5.channel.k8s.io", "v4.channel.k8s.io"],
    [authModeHeader]: "impersonate",
    "impersonate-user": "dev1",
    "impersonate-group": ["devs", "system:authenticated"],
    "impersonate-extra-example.com%2Fteam": ["blue"],
  });
});

Deno.test("passthrough mode: the client's own Authorization goes on, no impersonation", () => {
  assert.deepEqual(identityHeaders(raw, "passthrough", who), {
    host: "hub:443",
    authorization: "Bearer user-token",
    accept: "application/json",
    "x-stream-protocol-version": ["v5.channel.k8s.io", "v4.channel.k8s.io"],
    [authModeHeader]: "passthrough",
  });
});

Deno.test("a user with no groups gets no Impersonate-Group", () => {
  const h = identityHeaders(["Host", "h"], "impersonate", { user: "u", groups: [], via: "certificate" });
  assert.deepEqual(h, { host: "h", [authModeHeader]: "impersonate", "impersonate-user": "u" });
});

Deno.test("Service headers: no credential, no identity, Host names the Service", () => {
  const table: [string, string][] = [["8080", "web.ns.svc:8080"], ["http", "web.ns.svc"]];
  for (const [port, host] of table) {
    assert.deepEqual(serviceHeaders(raw, { namespace: "ns", name: "web", port }), {
      host,
      accept: "application/json",
      "x-stream-protocol-version": ["v5.channel.k8s.io", "v4.channel.k8s.io"],
    }, port);
  }
});

Deno.test("X-Forwarded-For: the client's address appended toward the API server and Services, never replaced", () => {
  const cases: { sent: string[]; remote: string | undefined; want: string | undefined }[] = [
    { sent: [], remote: "192.0.2.10", want: "192.0.2.10" },
    { sent: [], remote: "::ffff:192.0.2.10", want: "192.0.2.10" },
    { sent: [], remote: "2001:db8::7", want: "2001:db8::7" },
    // What the client claims stays in front; the hub's entry is the last one.
    { sent: ["X-Forwarded-For", "203.0.113.1"], remote: "192.0.2.10", want: "203.0.113.1, 192.0.2.10" },
    {
      sent: ["X-Forwarded-For", "203.0.113.1", "x-forwarded-for", "203.0.113.2"],
      remote: "192.0.2.10",
      want: "203.0.113.1, 203.0.113.2, 192.0.2.10",
    },
    { sent: [], remote: undefined, want: undefined },
  ];
  const svc = { namespace: "ns", name: "web", port: "80" };
  for (const c of cases) {
    const api = identityHeaders(["Host", "hub", ...c.sent], "impersonate", who, c.remote);
    assert.equal(api["x-forwarded-for"], c.want, JSON.stringify(c));
    assert.equal(api["impersonate-user"], "dev1");
    assert.equal(serviceHeaders(["Host", "hub", ...c.sent], svc, c.remote)["x-forwarded-for"], c.want);
  }
});
