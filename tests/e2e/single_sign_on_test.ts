/**
 * Single sign-on end to end: real kubectl through the hub to a real kube-apiserver, with a kubeconfig
 * from `kubeconfig --oidc` whose user runs `main_server.ts login` as an exec credential plugin against a
 * real OpenID Provider (zitadel/oidc's example OP over HTTPS). The browser step is a real HTTP client
 * that opens the URL the plugin prints (kubectl passes the plugin's stderr through), follows the OP's
 * redirects and submits its login form; the device flow is approved the same way. The IdP's groups
 * decide access through a label-selector rule; relabelling the cluster grants and revokes on the next
 * request; a short-lived client certificate expires and kubectl shows why.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { scratchDir, serverCommand } from "../helpers/tower_procs.ts";
import {
  FormBrowser,
  type OidcProvider,
  providerTls,
  type ProviderUser,
  startOidcProvider,
} from "../helpers/oidc_provider.ts";

const ann: ProviderUser = { username: "ann", password: "pw-ann", email: "ann@example.com", groups: ["sre"] };
const bob: ProviderUser = { username: "bob", password: "pw-bob", email: "bob@example.com", groups: ["dev"] };

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  assert.equal(r.code, 0, `main_server.ts ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Reads a child's stderr into a string as it arrives; resolves `until(re)` once it matches. */
function stderrOf(child: Deno.ChildProcess) {
  let text = "";
  const waiters: (() => void)[] = [];
  const pump = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const w of waiters.splice(0)) w();
    }
    for (const w of waiters.splice(0)) w();
  })();
  const until = async (re: RegExp, ms = 60_000): Promise<RegExpExecArray> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(text);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`stderr never matched ${re}: ${text}`);
      await Promise.race([
        new Promise<void>((r) => waiters.push(r)),
        new Promise((r) => setTimeout(r, 1000)),
      ]);
    }
  };
  return { until, text: () => text, done: pump };
}

/** Runs kubectl; when the plugin asks for a browser login, `onPrompt` gets its stderr so far. */
async function kubectlWithLogin(
  env: TowerEnv,
  kubeconfig: string,
  args: string[],
  onPrompt?: (stderr: ReturnType<typeof stderrOf>) => Promise<void>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = env.spawnKubectl(kubeconfig, args);
  const err = stderrOf(child);
  const out = new Response(child.stdout).text();
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  try {
    if (onPrompt) await onPrompt(err);
    const status = await child.status;
    await err.done;
    return { code: status.code, stdout: await out, stderr: err.text() };
  } finally {
    clearTimeout(timer);
  }
}

/** Logs in through the browser when the plugin prints its URL. */
const browserLogin = (p: OidcProvider, user: ProviderUser) => async (err: ReturnType<typeof stderrOf>) => {
  const m = await err.until(/^\s+(https:\/\/\S+\/auth\?\S+)$/m);
  const browser = new FormBrowser(p.caPem);
  try {
    const page = await browser.authorize(new URL(m[1]!), user.username, user.password);
    assert.match(page.text, /Logged in to Tower/, page.text);
  } finally {
    browser.close();
  }
};

Deno.test("single sign-on: kubectl logs in through a real IdP; IdP groups, labels and expiring credentials decide", async (t) => {
  const dir = await scratchDir("sso");
  let corp: OidcProvider | undefined;
  let env: TowerEnv | undefined;
  try {
    const tls = await providerTls(dir);
    corp = await startOidcProvider({ dir, name: "corp", users: [ann, bob], clients: ["tower"], tls });
    const idp = corp;
    env = await startTowerEnv({
      clusters: ["alpha"],
      hubArgs: ["--oidc-issuer", idp.issuer, "--oidc-client-id", "tower", "--oidc-ca-file", tls.caFile],
    });
    const e = env;
    const data = ["--data-dir", e.dataDir];
    // No controller-manager aggregates the built-in roles here: a role of its own, bound to the IdP group.
    const admin = (args: string[]) => e.clusters.get("alpha")!.kubectl(args);
    const r1 = await admin([
      "create",
      "clusterrole",
      "ns-reader",
      "--verb=get,list",
      "--resource=namespaces",
    ]);
    assert.equal(r1.code, 0, r1.stderr);
    const r0 = await admin([
      "create",
      "clusterrolebinding",
      "sre-ns-reader",
      "--clusterrole=ns-reader",
      "--group=sre",
    ]);
    assert.equal(r0.code, 0, r0.stderr);
    await must(["cluster", "label", "alpha", "env=prod", ...data]);
    await must(["access", "allow", "--group", "sre", "--cluster-selector", "env in (prod,staging)", ...data]);
    await e.hub.waitFor((l) => l.msg === "cluster labels changed", "labels env=prod");

    const oidcKubeconfig = async (name: string, extra: string[] = []) => {
      const text = await must([
        "kubeconfig",
        "--oidc",
        "--oidc-issuer",
        idp.issuer,
        "--oidc-client-id",
        "tower",
        "--oidc-ca-file",
        tls.caFile,
        "--cache-dir",
        join(dir, `cache-${name}`),
        "--server",
        `https://127.0.0.1:${e.hub.port}`,
        ...extra,
        ...data,
      ]);
      const path = join(dir, `kubeconfig-${name}`);
      await Deno.writeTextFile(path, text, { mode: 0o600 });
      return path;
    };
    const annKc = await oidcKubeconfig("ann", ["--group", "sre"]);

    await t.step("ann logs in in the browser; kubectl runs as her with her IdP groups", async () => {
      const r = await kubectlWithLogin(e, annKc, ["auth", "whoami", "-o", "json"], browserLogin(idp, ann));
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout).status.userInfo;
      assert.equal(info.username, "ann@example.com");
      assert.ok(info.groups.includes("sre"), JSON.stringify(info));
      const ns = await e.kubectl(annKc, ["get", "namespaces", "-o", "name"]);
      assert.equal(ns.code, 0, ns.stderr);
      assert.match(ns.stdout, /namespace\/default/);
      assert.doesNotMatch(ns.stderr, /open this URL/, "the cached token is reused");
      const files = [...Deno.readDirSync(join(dir, "cache-ann"))];
      assert.equal(files.length, 1);
      assert.equal(Deno.statSync(join(dir, "cache-ann", files[0]!.name)).mode! & 0o777, 0o600);
    });

    await t.step("bob's IdP groups do not reach the cluster: 403", async () => {
      const bobKc = await oidcKubeconfig("bob");
      const r = await kubectlWithLogin(e, bobKc, ["get", "namespaces"], browserLogin(idp, bob));
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /user 'bob@example\.com' may not reach cluster 'alpha'/);
    });

    await t.step("relabelling revokes and grants on the next request", async () => {
      const from = e.hub.lines.length;
      await must(["cluster", "label", "alpha", "env=dev", ...data]);
      await e.hub.waitFor((l) => l.msg === "cluster labels changed", "labels env=dev", 20_000, from);
      let r = await e.kubectl(annKc, ["get", "namespaces"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /may not reach cluster 'alpha'/);
      const again = e.hub.lines.length;
      await must(["cluster", "label", "alpha", "env=staging", ...data]);
      await e.hub.waitFor((l) => l.msg === "cluster labels changed", "labels env=staging", 20_000, again);
      r = await e.kubectl(annKc, ["get", "namespaces", "-o", "name"]);
      assert.equal(r.code, 0, r.stderr);
    });

    await t.step("device flow: the code is approved on another device", async () => {
      const kc = await oidcKubeconfig("device", ["--oidc-flow", "device"]);
      const r = await kubectlWithLogin(e, kc, ["auth", "whoami", "-o", "json"], async (err) => {
        const m = await err.until(/open (https:\/\/\S+) and enter the code (\S+)/);
        const browser = new FormBrowser(idp.caPem);
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
      assert.equal(JSON.parse(r.stdout).status.userInfo.username, "ann@example.com");
    });

    await t.step("a short-lived client certificate expires and kubectl says so", async () => {
      await must(["user", "add", "carl", "--group", "sre", ...data]);
      const text = await must([
        "kubeconfig",
        "--user",
        "carl",
        "--ttl",
        "6s",
        "--server",
        `https://127.0.0.1:${e.hub.port}`,
        ...data,
      ]);
      const kc = join(dir, "kubeconfig-carl");
      await Deno.writeTextFile(kc, text, { mode: 0o600 });
      const issued = Date.now();
      const ok = await e.kubectl(kc, ["get", "namespaces", "-o", "name"]);
      assert.equal(ok.code, 0, ok.stderr);
      // Expiry is the event under test: wait for the wall clock to pass the certificate's end.
      await new Promise((r) => setTimeout(r, Math.max(0, issued + 11_000 - Date.now())));
      const r = await e.kubectl(kc, ["get", "namespaces"]);
      assert.notEqual(r.code, 0);
      assert.match(
        r.stderr,
        /You must be logged in to the server \(Unauthorized: client certificate expired at/,
      );
    });
  } finally {
    await env?.stop();
    await corp?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
