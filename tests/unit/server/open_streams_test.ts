/** Open requests per user: capped, and closed once when a registry change revokes them. */

import assert from "node:assert/strict";
import { credentialStamp, OpenStreams } from "../../../lib/server/open_streams.ts";
import { emptyRegistry, type RegistryData } from "../../../lib/registry/mod.ts";
import type { Identity } from "../../../lib/server/user_auth.ts";

function registry(): RegistryData {
  const r = emptyRegistry();
  r.clusters.push({ name: "alpha", tokenHash: "sha256:" + "0".repeat(64), createdAt: "" });
  r.users.push({ name: "ann", groups: ["devs"], createdAt: "", certEpoch: "1a2b3c4d5e6f" });
  r.users.push({ name: "bob", groups: ["devs"], createdAt: "", tokenHash: "sha256:" + "1".repeat(64) });
  r.access.push({ groups: ["devs"], clusters: ["alpha"] });
  return r;
}

Deno.test("OpenStreams: a user holds at most maxPerUser at once; others are not affected", () => {
  const streams = new OpenStreams(3);
  const ann: Identity = { user: "ann", groups: ["devs"], via: "certificate" };
  const untrack = Array.from(
    { length: 3 },
    () => streams.track({ who: ann, cluster: "alpha", credential: undefined, close: () => {} }),
  );
  assert.equal(streams.hasRoomFor("ann"), false);
  assert.equal(streams.hasRoomFor("bob"), true);
  untrack[0]!();
  untrack[0]!();
  assert.equal(streams.hasRoomFor("ann"), true, "one ended (counted once)");
  assert.equal(streams.size, 2);
});

Deno.test("OpenStreams.revoke: user removed, certificates revoked, access gone; each closed once", () => {
  const r = registry();
  const streams = new OpenStreams();
  const closed: string[] = [];
  const open = (who: Identity) =>
    streams.track({
      who,
      cluster: "alpha",
      credential: credentialStamp(who, r),
      close: (reason) => void closed.push(`${who.user}: ${reason}`),
    });
  const ann: Identity = { user: "ann", groups: ["devs"], via: "certificate" };
  const bob: Identity = { user: "bob", groups: ["devs"], via: "token" };
  const sso: Identity = { user: "carol@example.com", groups: ["devs"], via: "oidc" };
  open(ann);
  open(bob);
  open(sso);
  assert.deepEqual(streams.revoke(r), [], "nothing changed");
  const next = structuredClone(r);
  next.users[0]!.certEpoch = "2a2b3c4d5e6f";
  assert.deepEqual(streams.revoke(next), ["credentials revoked"]);
  assert.deepEqual(streams.revoke(next), [], "closed once");
  next.access = [];
  assert.deepEqual(streams.revoke(next), ["access revoked"]);
  next.users = [];
  assert.deepEqual(streams.revoke(next), []);
  assert.deepEqual(closed, ["ann: credentials revoked", "bob: access revoked"]);
  // OIDC identities are not the registry's to judge.
  assert.equal(streams.size, 3);
});
