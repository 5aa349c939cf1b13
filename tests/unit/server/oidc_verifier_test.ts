/** OIDC flag parsing and claim mapping with kube-apiserver's meanings (no provider needed). @module */

import assert from "node:assert/strict";
import {
  claimsToIdentity,
  maxGroups,
  oidcConfigs,
  type OidcIssuerConfig,
} from "../../../lib/server/oidc_verifier.ts";

const none = { caPems: [], usernameClaims: [], groupsClaims: [], usernamePrefixes: [], groupsPrefixes: [] };

Deno.test("oidcConfigs: defaults, per-issuer values, and flags given once for all", () => {
  assert.deepEqual(oidcConfigs({ ...none, issuers: [], clientIds: [] }), []);
  const [a, b] = oidcConfigs({
    ...none,
    issuers: ["https://a.example", "https://b.example/realm"],
    clientIds: ["tower"],
    groupsPrefixes: ["a:", "b:"],
  });
  assert.deepEqual(a, {
    issuer: "https://a.example",
    clientId: "tower",
    usernameClaim: "email",
    groupsClaim: "groups",
    groupsPrefix: "a:",
  });
  assert.equal(b!.clientId, "tower");
  assert.equal(b!.groupsPrefix, "b:");
});

Deno.test("oidcConfigs: mistakes are refused with a message naming the flag", () => {
  const bad: [Parameters<typeof oidcConfigs>[0], RegExp][] = [
    [{ ...none, issuers: ["http://a.example"], clientIds: ["t"] }, /must be an https:\/\/ URL/],
    [{ ...none, issuers: ["nope"], clientIds: ["t"] }, /is not a URL/],
    [
      { ...none, issuers: ["https://a.example?x=1"], clientIds: ["t"] },
      /may not have a query/,
    ],
    [{ ...none, issuers: ["https://a.example"], clientIds: [] }, /needs --oidc-client-id/],
    [
      { ...none, issuers: ["https://a", "https://b", "https://c"], clientIds: ["x", "y"] },
      /given 2 times for 3 issuers/,
    ],
    [{ ...none, issuers: ["https://a", "https://a"], clientIds: ["x"] }, /given twice/],
    [{ ...none, issuers: [], clientIds: ["x"] }, /need --oidc-issuer/],
  ];
  for (const [flags, want] of bad) assert.throws(() => oidcConfigs(flags), want);
});

const base: OidcIssuerConfig = {
  issuer: "https://idp.example",
  clientId: "tower",
  usernameClaim: "email",
  groupsClaim: "groups",
};

Deno.test("claimsToIdentity: username claim and prefixes as kube-apiserver has them", () => {
  const claims = { sub: "u1", email: "ann@example.com", email_verified: true, groups: ["sre"] };
  assert.deepEqual(claimsToIdentity(claims, base), {
    ok: true,
    issuer: base.issuer,
    user: "ann@example.com",
    groups: ["sre"],
  });
  // Another claim than email: prefixed with ISSUER# unless a prefix is given; '-' means none.
  assert.equal(
    (claimsToIdentity(claims, { ...base, usernameClaim: "sub" }) as { user: string }).user,
    "https://idp.example#u1",
  );
  assert.equal(
    (claimsToIdentity(claims, { ...base, usernameClaim: "sub", usernamePrefix: "-" }) as { user: string })
      .user,
    "u1",
  );
  assert.equal(
    (claimsToIdentity(claims, { ...base, usernamePrefix: "oidc:" }) as { user: string }).user,
    "oidc:ann@example.com",
  );
  assert.deepEqual(
    (claimsToIdentity(claims, { ...base, groupsPrefix: "idp:" }) as { groups: string[] }).groups,
    ["idp:sre"],
  );
  // A single group may come as a string; none at all is no groups.
  assert.deepEqual((claimsToIdentity({ email: "a@b", groups: "ops" }, base) as { groups: string[] }).groups, [
    "ops",
  ]);
  assert.deepEqual((claimsToIdentity({ email: "a@b" }, base) as { groups: string[] }).groups, []);
});

Deno.test("claimsToIdentity: refusals", () => {
  const reason = (claims: Record<string, unknown>, c = base) => {
    const r = claimsToIdentity(claims, c);
    assert.equal(r.ok, false);
    return (r as { reason: string }).reason;
  };
  assert.match(reason({ sub: "u1" }), /no 'email' claim/);
  assert.match(reason({ email: "a@b", email_verified: false }), /email is not verified/);
  assert.match(reason({ email: "a@b", groups: [1] }), /'groups' claim is not a list of strings/);
  const groups = (n: number) => Array.from({ length: n }, (_, i) => `g${i}`);
  assert.equal(claimsToIdentity({ email: "a@b", groups: groups(maxGroups) }, base).ok, true);
  assert.match(reason({ email: "a@b", groups: groups(maxGroups + 1) }), /257 groups; at most 256/);
});
