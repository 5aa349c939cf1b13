/** X-Forwarded-For toward the API server and Services: the client's address appended, never replaced. */

import assert from "node:assert/strict";
import { identityHeaders } from "../../../lib/server/kube_proxy.ts";

const who = { user: "dev", groups: ["devs"], via: "token" as const };

Deno.test("identityHeaders appends the client address to X-Forwarded-For", () => {
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
  for (const c of cases) {
    const headers = identityHeaders(["Host", "hub", ...c.sent], "impersonate", who, c.remote);
    assert.equal(headers["x-forwarded-for"], c.want, JSON.stringify(c));
    assert.equal(headers["impersonate-user"], "dev");
  }
});
