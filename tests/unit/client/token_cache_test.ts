/** The login plugin's token cache and its ExecCredential output. @module */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  defaultCacheDir,
  dropCache,
  maxCacheBytes,
  readCache,
  writeCache,
} from "../../../lib/client/token_cache.ts";
import { execCredential } from "../../../lib/client/exec_credential.ts";

Deno.test("token cache: 0600 file in a 0700 dir, one per issuer and client, bounded, dropped on demand", async () => {
  const dir = join(await Deno.makeTempDir(), "oidc");
  try {
    const t = { issuer: "https://a", clientId: "tower", idToken: "x.y.z", expiresAt: 1, refreshToken: "r" };
    await writeCache(dir, t);
    await writeCache(dir, { ...t, clientId: "other", idToken: "o.o.o" });
    assert.deepEqual(await readCache(dir, "https://a", "tower"), t);
    assert.equal((await readCache(dir, "https://a", "other"))?.idToken, "o.o.o");
    assert.equal(await readCache(dir, "https://b", "tower"), undefined);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    const files = [...Deno.readDirSync(dir)].map((e) => join(dir, e.name));
    assert.equal(files.length, 2);
    for (const f of files) assert.equal((await Deno.stat(f)).mode! & 0o777, 0o600);
    // A file past the bound, or not ours, reads as no cache.
    const mine = files.find((f) => Deno.readTextFileSync(f).includes('"tower"'))!;
    await Deno.writeTextFile(mine, JSON.stringify({ ...t, pad: "p".repeat(maxCacheBytes) }));
    assert.equal(await readCache(dir, "https://a", "tower"), undefined);
    await Deno.writeTextFile(mine, "{not json");
    assert.equal(await readCache(dir, "https://a", "tower"), undefined);
    await dropCache(dir, "https://a", "other");
    assert.equal(await readCache(dir, "https://a", "other"), undefined);
  } finally {
    await Deno.remove(join(dir, ".."), { recursive: true });
  }
});

Deno.test("default cache dir: XDG_CONFIG_HOME, else HOME/.config, else a message", () => {
  const env = (vars: Record<string, string>) => ({ get: (k: string) => vars[k] });
  assert.equal(defaultCacheDir(env({ XDG_CONFIG_HOME: "/x", HOME: "/h" })), "/x/tower/oidc");
  assert.equal(defaultCacheDir(env({ HOME: "/h" })), "/h/.config/tower/oidc");
  assert.throws(() => defaultCacheDir(env({})), /give login --cache-dir DIR/);
});

Deno.test("execCredential is a client.authentication.k8s.io/v1 ExecCredential with an RFC 3339 expiry", () => {
  assert.deepEqual(JSON.parse(execCredential("tok", Date.UTC(2030, 0, 2, 3, 4, 5, 678))), {
    apiVersion: "client.authentication.k8s.io/v1",
    kind: "ExecCredential",
    status: { token: "tok", expirationTimestamp: "2030-01-02T03:04:05Z" },
  });
});
