/**
 * The hub accepting ID tokens from real OpenID Providers (zitadel/oidc's example OP over HTTPS, logged in
 * to through its login form by a real HTTP client driving `login`'s authorization code flow with PKCE):
 * groups from the IdP decide access; another issuer, a wrong audience, an expired token and a token
 * signed by a rotated-out key are refused with 401 and a reason; key rotation is picked up without a
 * restart; bounds on token length and group count; the reason is logged and the token never is.
 *
 * A token the hub accepts for a cluster with no agent gets 503 (authenticated and allowed, nothing to
 * serve it), one it refuses gets 401, and an authenticated caller without access gets 403: no cluster
 * is needed to tell them apart.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type HubProcess, scratchDir, serverCommand, startHub } from "../helpers/tower_procs.ts";
import {
  FormBrowser,
  type OidcProvider,
  providerTls,
  type ProviderUser,
  startOidcProvider,
} from "../helpers/oidc_provider.ts";
import { idToken } from "../../lib/client/oidc_login.ts";

const ann: ProviderUser = { username: "ann", password: "pw-ann", email: "ann@example.com", groups: ["sre"] };
const bob: ProviderUser = { username: "bob", password: "pw-bob", email: "bob@example.com", groups: ["dev"] };
const many = (n: number): ProviderUser => ({
  username: `many${n}`,
  password: "pw-many",
  email: `many${n}@example.com`,
  groups: Array.from({ length: n }, (_, i) => (i === 0 ? "sre" : `g${i}`)),
});

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Logs `user` in at `p` for `clientId` through `login`'s browser flow; returns the ID token. */
async function loginAs(
  p: OidcProvider,
  clientId: string,
  user: ProviderUser,
  cacheDir: string,
): Promise<string> {
  const browser = new FormBrowser(p.caPem);
  try {
    let seen!: (u: URL) => void;
    const url = new Promise<URL>((r) => seen = r);
    const token = idToken({
      issuer: p.issuer,
      clientId,
      caPem: p.caPem,
      cacheDir,
      flow: "browser",
      timeoutMs: 30_000,
      tell: (line) => {
        const m = /^\s+(https:\/\/\S+)$/m.exec(line);
        if (m) seen(new URL(m[1]!));
      },
    });
    const page = await browser.authorize(await url, user.username, user.password);
    assert.match(page.text, /Logged in to Tower/, `${page.url.href}: ${page.text}`);
    return (await token).idToken;
  } finally {
    browser.close();
  }
}

Deno.test("hub: OIDC ID tokens from trusted issuers, refused with reasons otherwise", async (t) => {
  const dir = await scratchDir("oidc");
  const providers: OidcProvider[] = [];
  let hub: HubProcess | undefined;
  const tokens: string[] = [];
  let cacheN = 0;
  const cache = () => join(dir, `cache-${cacheN++}`);
  try {
    const tls = await providerTls(dir);
    const users = [ann, bob, many(256), many(257)];
    const corp = await startOidcProvider({ dir, name: "corp", users, clients: ["tower", "other"], tls });
    const short = await startOidcProvider({
      dir,
      name: "short",
      users,
      clients: ["tower"],
      tls,
      idTokenTtl: "2s",
    });
    const rogue = await startOidcProvider({ dir, name: "rogue", users, clients: ["tower"], tls });
    providers.push(corp, short, rogue);

    await must(["cluster", "add", "alpha", "--data-dir", dir]);
    await must(["access", "allow", "--group", "idp:sre", "--clusters", "*", "--data-dir", dir]);
    hub = await startHub({
      dataDir: dir,
      args: [
        ...["--oidc-issuer", corp.issuer, "--oidc-issuer", short.issuer],
        ...["--oidc-client-id", "tower", "--oidc-ca-file", tls.caFile, "--oidc-groups-prefix", "idp:"],
      ],
    });
    const ca = await Deno.readTextFile(join(dir, "ca.crt"));
    const h = hub;
    let lastAnswer = 0;
    const call = async (token: string) => {
      const client = Deno.createHttpClient({ caCerts: [ca] });
      try {
        const r = await fetch(`https://127.0.0.1:${h.port}/clusters/alpha/api`, {
          headers: { authorization: `Bearer ${token}` },
          client,
        });
        const body = await r.text();
        let message = body;
        try {
          message = JSON.parse(body).message;
        } catch { /* not a Status */ }
        lastAnswer = Date.now();
        return { status: r.status, message };
      } finally {
        client.close();
      }
    };
    const refused = async (token: string, reason: RegExp) => {
      const r = await call(token);
      assert.equal(r.status, 401, r.message);
      assert.match(r.message, reason);
    };

    let annToken = "";
    await t.step("groups from the IdP decide access", async () => {
      annToken = await loginAs(corp, "tower", ann, cache());
      tokens.push(annToken);
      assert.equal((await call(annToken)).status, 503);
      const bobToken = await loginAs(corp, "tower", bob, cache());
      tokens.push(bobToken);
      const r = await call(bobToken);
      assert.equal(r.status, 403, r.message);
      assert.match(r.message, /user 'bob@example.com' may not reach cluster 'alpha'/);
      // A second trusted issuer.
      const shortToken = await loginAs(short, "tower", ann, cache());
      tokens.push(shortToken);
      assert.equal((await call(shortToken)).status, 503);
    });

    await t.step("another issuer, a wrong audience, junk: 401 with the reason", async () => {
      const rogueToken = await loginAs(rogue, "tower", ann, cache());
      await refused(rogueToken, /token issuer "https:\/\/127\.0\.0\.1:\d+" is not trusted by this hub/);
      const other = await loginAs(corp, "other", ann, cache());
      await refused(other, /token audience is not this hub's client ID 'tower'/);
      await refused("aaa.bbb.ccc", /token is not a JWT/);
      tokens.push(rogueToken, other);
    });

    await t.step("token length and group count are bounded", async () => {
      await refused(`eyJ${"a".repeat(8192)}.b.c`, /token is longer than 8192 characters/);
      const atBound = await loginAs(corp, "tower", many(256), cache());
      assert.equal((await call(atBound)).status, 503);
      const over = await loginAs(corp, "tower", many(257), cache());
      await refused(over, /token carries 257 groups; at most 256/);
      tokens.push(atBound, over);
    });

    await t.step("an expired token is refused", async () => {
      const expiring = await loginAs(short, "tower", ann, cache());
      tokens.push(expiring);
      const exp = JSON.parse(atob(expiring.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000;
      // Expiry is the event under test: wait for the wall clock to pass exp plus the hub's 5 s skew.
      await new Promise((r) => setTimeout(r, Math.max(0, exp + 5_000 - Date.now()) + 1000));
      await refused(expiring, /token expired at \S+; log in again/);
    });

    await t.step(
      "key rotation at the IdP is picked up without a restart; a rotated-out key is refused",
      async () => {
        // The hub refetches keys when a token names an unknown key, at most once a second: wait out that
        // cooldown so each step below really asks the IdP. Any fetch happens during a request the test
        // makes, so the cooldown is counted from the last answer.
        const afterFetch = async () => {
          await new Promise((r) => setTimeout(r, Math.max(0, lastAnswer + 1100 - Date.now())));
        };
        await corp.rotateKey(false);
        await afterFetch();
        const second = await loginAs(corp, "tower", ann, cache());
        assert.equal((await call(second)).status, 503, "token signed by the new key");
        assert.equal((await call(annToken)).status, 503, "the old key is still published");
        await corp.rotateKey(true);
        await afterFetch();
        const third = await loginAs(corp, "tower", ann, cache());
        assert.equal((await call(third)).status, 503, "token signed by the newest key");
        await afterFetch();
        await refused(annToken, /signed by a key https:\/\/\S+ does not publish \(rotated out\?\)/);
        await refused(second, /does not publish/);
        tokens.push(second, third);
      },
    );

    await t.step("reasons are logged, tokens never", () => {
      const log = h.dump();
      assert.match(log, /"msg":"oidc token refused".*"reason":"token audience is not this hub's client ID/);
      for (const tok of tokens) {
        assert.ok(!log.includes(tok.split(".")[2]!), "a token signature appears in the log");
      }
    });
  } finally {
    await hub?.stop();
    await Promise.all(providers.map((p) => p.stop()));
    await Deno.remove(dir, { recursive: true });
  }
});
