/**
 * `main_server.ts login` as kubectl runs it: a process with the `client` permission set and write access
 * to its token cache only, printing an ExecCredential on stdout and its prompts on stderr. Against a real
 * OpenID Provider: a browser login (a real HTTP client submitting the OP's login form at the URL the
 * plugin prints), the cached token reused, a refresh when it nears expiry (no new login), the device flow,
 * and clear errors.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { repoRoot, scratchDir } from "../helpers/tower_procs.ts";
import {
  FormBrowser,
  type OidcProvider,
  providerTls,
  type ProviderUser,
  startOidcProvider,
} from "../helpers/oidc_provider.ts";
import { renewBeforeMs } from "../../lib/client/oidc_login.ts";

const ann: ProviderUser = { username: "ann", password: "pw-ann", email: "ann@example.com", groups: ["sre"] };

/** Runs the plugin; `onStderr` sees its stderr as it grows (to play the user). */
async function runLogin(
  p: OidcProvider,
  cacheDir: string,
  extra: string[],
  onPrompt?: (stderr: () => string) => Promise<void>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-P=client",
      `--allow-write=${cacheDir}`,
      "--no-prompt",
      "main_server.ts",
      "login",
      `--issuer=${p.issuer}`,
      "--client-id=tower",
      `--ca-file=${p.caFile}`,
      `--cache-dir=${cacheDir}`,
      ...extra,
    ],
    cwd: repoRoot,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let err = "";
  const pump = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) err += c;
  })();
  const out = new Response(child.stdout).text();
  const killer = setTimeout(() => child.kill("SIGKILL"), 90_000);
  try {
    if (onPrompt) await onPrompt(() => err);
    const status = await child.status;
    await pump;
    return { code: status.code, stdout: await out, stderr: err };
  } finally {
    clearTimeout(killer);
  }
}

/** Waits until `text()` matches `re` (the plugin's prompt), at most 60 s. */
async function prompt(text: () => string, re: RegExp): Promise<RegExpExecArray> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const m = re.exec(text());
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no prompt matching ${re}: ${text()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function credential(stdout: string): { token: string; expires: number } {
  const c = JSON.parse(stdout);
  assert.equal(c.apiVersion, "client.authentication.k8s.io/v1");
  assert.equal(c.kind, "ExecCredential");
  return { token: c.status.token, expires: Date.parse(c.status.expirationTimestamp) };
}

Deno.test("login plugin: browser login, cached token, refresh near expiry, device flow, errors", async (t) => {
  const dir = await scratchDir("login");
  let idp: OidcProvider | undefined;
  try {
    const tls = await providerTls(dir);
    // ID tokens live a little longer than the plugin's renewal margin, so a refresh comes due quickly.
    const ttlMs = renewBeforeMs + 20_000;
    idp = await startOidcProvider({
      dir,
      name: "corp",
      users: [ann],
      clients: ["tower"],
      tls,
      idTokenTtl: `${ttlMs}ms`,
    });
    const p = idp;
    const cache = join(dir, "cache");
    let first = { token: "", expires: 0 };

    await t.step(
      "browser login through the OP's form; ExecCredential on stdout, prompt on stderr",
      async () => {
        const r = await runLogin(p, cache, [], async (stderr) => {
          const m = await prompt(stderr, /^\s+(https:\/\/\S+\/auth\?\S+)$/m);
          const url = new URL(m[1]!);
          assert.equal(url.searchParams.get("code_challenge_method"), "S256");
          assert.match(url.searchParams.get("redirect_uri")!, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
          const browser = new FormBrowser(p.caPem);
          try {
            const page = await browser.authorize(url, ann.username, ann.password);
            assert.match(page.text, /Logged in to Tower/);
          } finally {
            browser.close();
          }
        });
        assert.equal(r.code, 0, r.stderr);
        first = credential(r.stdout);
        const claims = JSON.parse(atob(first.token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/")));
        assert.equal(claims.email, "ann@example.com");
        assert.deepEqual(claims.groups, ["sre"]);
        assert.ok(Math.abs(first.expires - claims.exp * 1000) < 1000);
        const files = [...Deno.readDirSync(cache)];
        assert.equal(files.length, 1);
        assert.equal(Deno.statSync(join(cache, files[0]!.name)).mode! & 0o777, 0o600);
        assert.equal(Deno.statSync(cache).mode! & 0o777, 0o700);
      },
    );

    await t.step("a fresh cached token is printed again without asking", async () => {
      const r = await runLogin(p, cache, []);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(credential(r.stdout).token, first.token);
      assert.doesNotMatch(r.stderr, /open this URL/);
    });

    await t.step("near expiry the refresh token gets a new ID token, with no login", async () => {
      // The renewal margin is the event under test: wait until the token is inside it.
      await new Promise((r) => setTimeout(r, Math.max(0, first.expires - renewBeforeMs - Date.now()) + 500));
      const r = await runLogin(p, cache, []);
      assert.equal(r.code, 0, r.stderr);
      const next = credential(r.stdout);
      assert.notEqual(next.token, first.token);
      assert.ok(next.expires > first.expires);
      assert.doesNotMatch(r.stderr, /open this URL/);
    });

    await t.step("device flow: the user approves the code on another device", async () => {
      const r = await runLogin(p, join(dir, "cache-device"), ["--flow=device"], async (stderr) => {
        const m = await prompt(stderr, /open (https:\/\/\S+) and enter the code (\S+)/);
        const browser = new FormBrowser(p.caPem);
        try {
          assert.match(
            await browser.approveDevice(new URL(m[1]!), m[2]!, ann.username, ann.password),
            /allowed/,
          );
        } finally {
          browser.close();
        }
      });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(credential(r.stdout).token.split(".").length === 3);
    });

    await t.step("mistakes: missing flags, an unknown flow", async () => {
      const noIssuer = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-P=client", "--no-prompt", "main_server.ts", "login", "--client-id=x"],
        cwd: repoRoot,
        stdin: "null",
      }).output();
      assert.equal(noIssuer.code, 2);
      assert.match(new TextDecoder().decode(noIssuer.stderr), /login needs --issuer URL --client-id ID/);
      const flow = await runLogin(p, join(dir, "cache-x"), ["--flow=carrier-pigeon"]);
      assert.equal(flow.code, 2);
      assert.match(flow.stderr, /--flow 'carrier-pigeon' must be browser or device/);
    });
  } finally {
    await idp?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
