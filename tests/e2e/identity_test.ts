/**
 * Who reaches what through the hub, end to end: real kubectl in the root network namespace, real
 * kube-apiservers (with RBAC) in their own namespaces, reachable only through in-cluster agents.
 *
 * Two real clusters: `alpha` (impersonation) and `beta` (hub mode passthrough, agent accepts both). Three
 * more registrations, added while the hub runs, cost no cluster: `gamma` (hub passthrough, served by an
 * agent inside alpha that accepts only impersonation), `delta` (a dedicated hub port, served by an agent
 * inside alpha) and `ghost` (registered, no agent).
 */

import assert from "node:assert/strict";
import https from "node:https";
import { join } from "node:path";
import YAML from "yaml";
import { auditLines, startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import {
  parseIssued,
  scratchDir,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { freePort } from "../helpers/net_servers.ts";

/** A response read without any client-side URL normalisation. */
interface RawResponse {
  status: number;
  body: string;
  json: Record<string, unknown> | undefined;
}

/** Client credentials for {@link rawRequest}. */
interface Credentials {
  cert?: string;
  key?: string;
  token?: string;
}

/** One HTTPS request to the hub with `path` sent exactly as given (no `..` folding as fetch would do). */
function rawRequest(
  port: number,
  path: string,
  ca: string,
  creds: Credentials,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: "127.0.0.1",
      port,
      path,
      method: opts.method ?? "GET",
      ca,
      ...(creds.cert ? { cert: creds.cert, key: creds.key } : {}),
      agent: false,
      headers: {
        accept: "application/json",
        connection: "close",
        ...(creds.token ? { authorization: `Bearer ${creds.token}` } : {}),
        ...(opts.body ? { "content-type": "application/json" } : {}),
        ...opts.headers,
      },
    }, (res) => {
      const chunks: Uint8Array[] = [];
      res.on("data", (c: Uint8Array) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = new TextDecoder().decode(
          chunks.reduce((a, b) => {
            const out = new Uint8Array(a.length + b.length);
            out.set(a);
            out.set(b, a.length);
            return out;
          }, new Uint8Array()),
        );
        let json: Record<string, unknown> | undefined;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body, json });
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`${path}: no answer in 30 s`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Asserts a metav1.Status failure with `code` whose message matches `message`. */
function assertStatus(r: RawResponse, code: number, message?: RegExp): void {
  assert.equal(r.status, code, `want ${code}, got ${r.status}: ${r.body}`);
  assert.ok(r.json, `not JSON: ${r.body}`);
  assert.equal(r.json.kind, "Status", r.body);
  assert.equal(r.json.apiVersion, "v1", r.body);
  assert.equal(r.json.status, "Failure", r.body);
  assert.equal(r.json.code, code, r.body);
  if (message) assert.match(String(r.json.message), message);
}

/** The client certificate and key in a kubeconfig written by `kubeconfig --user`. */
async function certOf(kubeconfig: string): Promise<{ cert: string; key: string }> {
  const kc = YAML.parse(await Deno.readTextFile(kubeconfig));
  const user = kc.users[0].user;
  return { cert: atob(user["client-certificate-data"]), key: atob(user["client-key-data"]) };
}

/** `kubectl auth whoami -o json` → user name and groups. */
function whoami(stdout: string): { username: string; groups: string[] } {
  const info = JSON.parse(stdout).status.userInfo;
  return { username: info.username, groups: info.groups ?? [] };
}

async function mustAdmin(env: TowerEnv, cluster: string, args: string[]): Promise<string> {
  const r = await env.clusters.get(cluster)!.kubectl(args);
  assert.equal(r.code, 0, `${cluster}: kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function mustServer(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  assert.equal(r.code, 0, `main_server.ts ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

Deno.test("identity: authentication, authorization, impersonation and passthrough through the hub", async (t) => {
  const env = await startTowerEnv({
    clusters: ["alpha", "beta"],
    modes: { beta: "passthrough" },
    agentModes: { beta: "impersonate,passthrough" },
  });
  const extraAgents: TowerProcess[] = [];
  try {
    const dataDir = env.dataDir;
    const alpha = env.clusters.get("alpha")!;
    const caFile = env.added.get("alpha")!.caFile;
    const ca = await Deno.readTextFile(caFile);
    const port = env.hub.port;
    const usedTokens: string[] = [...env.added.values()].map((a) => a.token);

    // Registrations served by extra agents inside alpha: gamma wants passthrough, which alpha's agents
    // do not accept; delta has its own hub port. The hub picks registry changes up while running.
    const deltaPort = await freePort();
    const issued = new Map<string, ReturnType<typeof parseIssued>>();
    for (
      const [name, flags] of [["gamma", ["--mode", "passthrough"]], ["ghost", []], ["delta", [
        "--port",
        String(deltaPort),
      ]]] as const
    ) {
      const out = await mustServer(["cluster", "add", name, "--data-dir", dataDir, ...flags]);
      issued.set(name, parseIssued(out));
      usedTokens.push(issued.get(name)!.token);
    }
    await env.hub.waitFor((l) => l.msg === "cluster port listening" && l.cluster === "delta", "delta port");
    const creds = await alpha.agentCredentials();
    for (const name of ["gamma", "delta"]) {
      const i = issued.get(name)!;
      const agent = startAgent({
        hubUrl: `wss://${alpha.hubAddress}:${port}/tunnel`,
        cluster: name,
        token: i.token,
        fingerprint: i.fingerprint,
        caFile: i.caFile,
        args: ["--kubernetes", "--sa-dir", creds.saDir],
        env: creds.env,
        name: `agent-${name}`,
        wrap: ["ip", "netns", "exec", alpha.netns],
      });
      extraAgents.push(agent);
      await agent.waitForMsg("connected to hub", 30_000);
    }

    // RBAC inside the clusters, as their admin.
    await mustAdmin(env, "alpha", ["create", "namespace", "team"]);
    await mustAdmin(env, "alpha", [
      "create",
      "role",
      "cm-rw",
      "-n",
      "team",
      "--verb=get,list,create",
      "--resource=configmaps",
    ]);
    await mustAdmin(env, "alpha", [
      "create",
      "rolebinding",
      "dev1-cm",
      "-n",
      "team",
      "--role=cm-rw",
      "--user=dev1",
    ]);
    await mustAdmin(env, "alpha", ["create", "configmap", "seed", "-n", "team", "--from-literal=k=v"]);
    // pat is all-powerful inside alpha but not allowed on alpha by the hub.
    await mustAdmin(env, "alpha", [
      "create",
      "clusterrolebinding",
      "pat-admin",
      "--clusterrole=cluster-admin",
      "--user=pat",
    ]);
    // (The aggregated `view` role is empty here: no controller-manager fills it in.)
    await mustAdmin(env, "beta", [
      "create",
      "role",
      "cm-read",
      "-n",
      "default",
      "--verb=get,list",
      "--resource=configmaps",
    ]);
    await mustAdmin(env, "beta", [
      "create",
      "rolebinding",
      "alice-cm",
      "-n",
      "default",
      "--role=cm-read",
      "--user=alice",
    ]);

    const dev1 = await env.addUser("dev1", ["devs"], ["alpha", "delta", "ghost"]);
    const pat = await env.addUser("pat", [], ["beta", "gamma"]);
    const tok1 = await env.addTokenUser("tok1", ["devs"], ["alpha", "beta"]);
    usedTokens.push(tok1);
    const dev1Cert = await certOf(dev1);
    const patCert = await certOf(pat);
    const kubectl = (kc: string, args: string[]) => env.kubectl(kc, args, { timeoutMs: 30_000 });
    // The running hub applies `user add` / `access allow` when it sees the registry file change.
    await eventually(10_000, async () => {
      for (
        const [cluster, creds] of [["alpha", dev1Cert], ["beta", patCert], ["alpha", {
          token: tok1,
        }]] as const
      ) {
        const r = await rawRequest(port, `/clusters/${cluster}/api`, ca, creds);
        assert.doesNotMatch(String(r.json?.message), /^Unauthorized: |may not reach cluster/);
      }
    });

    await t.step("kubeconfig: one context per reachable cluster, hub CA pinned", async () => {
      for (
        const [user, want] of [["dev1", ["alpha", "ghost", "delta"]], ["pat", ["beta", "gamma"]]] as const
      ) {
        const text = await mustServer([
          "kubeconfig",
          "--user",
          user,
          "--server",
          `https://127.0.0.1:${port}`,
          "--data-dir",
          dataDir,
        ]);
        const kc = YAML.parse(text);
        const contexts = kc.contexts.map((c: { name: string }) => c.name);
        assert.deepEqual([...contexts].sort(), [...want].sort());
        assert.equal(kc.clusters.length, want.length);
        assert.ok((want as readonly string[]).includes(kc["current-context"]));
        for (const c of kc.clusters) {
          assert.equal(c.cluster.server, `https://127.0.0.1:${port}/clusters/${c.name}`);
          assert.equal(atob(c.cluster["certificate-authority-data"]), ca);
          assert.equal(c.cluster["insecure-skip-tls-verify"], undefined);
        }
        const ctx = kc.contexts.find((c: { name: string }) => c.name === want[0]).context;
        assert.equal(ctx.cluster, want[0]);
        assert.equal(kc.users.length, 1);
        assert.equal(ctx.user, kc.users[0].name);
      }
    });

    await t.step("impersonation: the cluster's RBAC judges the hub user", async () => {
      let r = await kubectl(dev1, ["get", "configmaps", "-n", "team", "-o", "name"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /configmap\/seed/);
      r = await kubectl(dev1, ["create", "configmap", "made-by-dev1", "-n", "team", "--from-literal=a=b"]);
      assert.equal(r.code, 0, r.stderr);
      const created = await mustAdmin(env, "alpha", [
        "get",
        "cm",
        "made-by-dev1",
        "-n",
        "team",
        "-o",
        "json",
      ]);
      assert.equal(JSON.parse(created).data.a, "b");

      r = await kubectl(dev1, ["get", "configmaps", "-n", "default"]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /Forbidden.*User "dev1" cannot list resource "configmaps".*namespace "default"/);
      r = await kubectl(dev1, ["get", "secrets", "-n", "team"]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /Forbidden.*User "dev1" cannot list resource "secrets"/);

      r = await kubectl(dev1, ["auth", "whoami", "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      const me = whoami(r.stdout);
      assert.equal(me.username, "dev1");
      assert.deepEqual([...me.groups].sort(), ["devs", "system:authenticated"]);
    });

    await t.step("client-sent impersonation gains nothing", async () => {
      for (const as of [["--as=system:admin"], ["--as=system:admin", "--as-group=system:masters"]]) {
        let r = await kubectl(dev1, [...as, "get", "secrets", "-n", "team"]);
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, /Forbidden.*User "dev1" cannot list resource "secrets"/);
        r = await kubectl(dev1, [...as, "get", "configmaps", "-n", "default"]);
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, /User "dev1"/);
        r = await kubectl(dev1, [...as, "auth", "whoami", "-o", "json"]);
        assert.equal(r.code, 0, r.stderr);
        const me = whoami(r.stdout);
        assert.equal(me.username, "dev1");
        assert.deepEqual([...me.groups].sort(), ["devs", "system:authenticated"]);
      }
      // Raw headers too, including Impersonate-Extra and -Uid, which kubectl spells differently.
      const r = await rawRequest(port, "/clusters/alpha/api/v1/namespaces/team/secrets", ca, dev1Cert, {
        headers: {
          "Impersonate-User": "system:admin",
          "Impersonate-Group": "system:masters",
          "Impersonate-Uid": "0",
          "Impersonate-Extra-Scopes": "all",
        },
      });
      assertStatus(r, 403, /User "dev1" cannot list resource "secrets"/);
    });

    await t.step(
      "a user's extras reach the cluster as user.extra; a client's own extras do not",
      async () => {
        const extra = await env.addUser("ext1", ["devs"], ["alpha"], [
          "--extra",
          "team=blue",
          "--extra",
          "team=green",
          "--extra",
          "example.com/site=edge-1",
        ]);
        const r = await eventually(10_000, async () => {
          const r = await kubectl(extra, ["auth", "whoami", "-o", "json"]);
          assert.equal(r.code, 0, r.stderr);
          return r;
        });
        const info = JSON.parse(r.stdout).status.userInfo;
        assert.equal(info.username, "ext1");
        assert.deepEqual(info.extra, { "team": ["blue", "green"], "example.com/site": ["edge-1"] });
        // kubectl's own --as-user-extra is stripped like every client-sent Impersonate-* header.
        const own = await kubectl(dev1, [
          "--as=dev1",
          "--as-user-extra=team=red",
          "auth",
          "whoami",
          "-o",
          "json",
        ]);
        assert.equal(own.code, 0, own.stderr);
        assert.equal(JSON.parse(own.stdout).status.userInfo.extra, undefined);
        // A bad extra is refused by `user add` with a message saying what is allowed.
        const bad = await serverCommand([
          "user",
          "add",
          "ext2",
          "--extra",
          "Team=x",
          "--data-dir",
          env.dataDir,
        ]);
        assert.equal(bad.code, 2);
        assert.match(bad.stderr, /extra key 'Team' is not valid: use lowercase letters/);
      },
    );

    await t.step("upgrades (exec) carry the same identity and the same refusals", async () => {
      await alpha.createPod("box", { namespace: "team" });
      await mustAdmin(env, "alpha", [
        "create",
        "role",
        "exec-box",
        "-n",
        "team",
        "--verb=get,create",
        "--resource=pods,pods/exec",
      ]);
      await mustAdmin(env, "alpha", [
        "create",
        "rolebinding",
        "dev1-exec",
        "-n",
        "team",
        "--role=exec-box",
        "--user=dev1",
      ]);
      // Several rounds over WebSocket and SPDY: the end of an exec stream (output, then the server's full
      // close) once lost its last bytes now and then.
      for (let i = 0; i < 4; i++) {
        for (const websockets of ["true", "false"]) {
          const r = await env.kubectl(dev1, ["exec", "-n", "team", "box", "--", "echo", `hello-${i}`], {
            env: { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: websockets },
            timeoutMs: 30_000,
          });
          assert.equal(r.code, 0, `websockets=${websockets}: ${r.stderr}`);
          assert.equal(r.stdout.trim(), `hello-${i}`, `websockets=${websockets}`);
        }
      }

      const upgrade = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13" };
      const execPath = "/clusters/alpha/api/v1/namespaces/team/pods/box/exec?command=id&stdout=true";
      // tok1 has no exec rights in the cluster, and asking to be someone else does not change that.
      const tokExec = await rawRequest(port, execPath, ca, { token: tok1 }, {
        headers: { ...upgrade, "sec-websocket-key": btoa("0123456789abcdef"), "impersonate-user": "dev1" },
      });
      assertStatus(tokExec, 403, /User "tok1" cannot (get|create) resource "pods\/exec"/);
      const patExec = await rawRequest(port, execPath, ca, patCert, {
        headers: { ...upgrade, "sec-websocket-key": btoa("0123456789abcdef") },
      });
      assertStatus(patExec, 403, /user 'pat' may not reach cluster 'alpha'/);
      const nobody = await rawRequest(port, execPath, ca, {}, {
        headers: { ...upgrade, "sec-websocket-key": btoa("0123456789abcdef") },
      });
      assertStatus(nobody, 401);
      const box = await alpha.kubectl(["get", "pod", "box", "-n", "team", "-o", "name"]);
      assert.equal(box.code, 0, box.stderr);
      await eventually(5_000, () => {
        const lines = auditLines(env);
        assert.ok(lines.some((l) => l.user === "dev1" && l.upgraded === true && l.agent), "exec is audited");
        assert.ok(
          lines.some((l) => l.user === "pat" && String(l.path).endsWith("/exec") && l.status === 403),
        );
      });
    });

    await t.step("bearer-token users: good token works, bad or missing credentials get 401", async () => {
      const bare = join(dataDir, "bare.kubeconfig");
      await Deno.writeTextFile(bare, "apiVersion: v1\nkind: Config\n");
      const viaToken = (token: string, args: string[]) =>
        kubectl(bare, [
          `--server=https://127.0.0.1:${port}/clusters/alpha`,
          `--certificate-authority=${caFile}`,
          `--token=${token}`,
          ...args,
        ]);
      let r = await viaToken(tok1, ["auth", "whoami", "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      const me = whoami(r.stdout);
      assert.equal(me.username, "tok1");
      assert.deepEqual([...me.groups].sort(), ["devs", "system:authenticated"]);
      r = await viaToken(tok1, ["get", "configmaps", "-n", "team"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /User "tok1" cannot list/);

      const wrong = `tower_${"A".repeat(43)}`;
      usedTokens.push(wrong);
      r = await viaToken(wrong, ["get", "configmaps", "-n", "team"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Unauthorized/);
      assertStatus(
        await rawRequest(port, "/clusters/alpha/api/v1/namespaces", ca, { token: wrong }),
        401,
        /Unauthorized/,
      );
      assert.equal(
        (await rawRequest(port, "/clusters/alpha/api/v1/namespaces", ca, { token: wrong })).json?.reason,
        "Unauthorized",
      );
      assertStatus(
        await rawRequest(port, "/clusters/alpha/api/v1/namespaces", ca, {}),
        401,
        /no credentials/,
      );
      // A token in the wrong scheme is no credential either.
      assertStatus(
        await rawRequest(port, "/clusters/alpha/api", ca, {}, {
          headers: { authorization: `Basic ${btoa(tok1)}` },
        }),
        401,
      );
    });

    await t.step("a user not allowed on a cluster is refused at the hub and never proxied", async () => {
      const agentLinesBefore = auditLines(env).filter((l) => l.agent).length;
      const r = await kubectl(pat, [
        `--server=https://127.0.0.1:${port}/clusters/alpha`,
        "create",
        "configmap",
        "pat-was-here",
        "-n",
        "default",
      ]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /user 'pat' may not reach cluster 'alpha'/);
      const raw = await rawRequest(
        port,
        "/clusters/alpha/api/v1/namespaces/default/configmaps",
        ca,
        patCert,
        {
          method: "POST",
          body: JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "pat-was-here" } }),
        },
      );
      assertStatus(raw, 403, /user 'pat' may not reach cluster 'alpha'/);
      assert.equal(raw.json?.reason, "Forbidden");
      // pat is cluster-admin inside alpha: had the request got through, the configmap would exist.
      const got = await alpha.kubectl(["get", "configmap", "pat-was-here", "-n", "default"]);
      assert.equal(got.code, 1);
      assert.match(got.stderr, /NotFound/);
      await eventually(5_000, () => {
        const refused = auditLines(env).filter((l) => l.user === "pat" && l.cluster === "alpha");
        assert.ok(refused.length >= 2, "refusals are audited");
        for (const l of refused) {
          assert.equal(l.status, 403);
          assert.equal(l.agent, undefined);
        }
      });
      assert.equal(auditLines(env).filter((l) => l.agent).length, agentLinesBefore);
    });

    await t.step("unknown cluster 404, no agent 503, path tricks refused and never proxied", async () => {
      assertStatus(
        await rawRequest(port, "/clusters/nosuch/api", ca, dev1Cert),
        404,
        /cluster 'nosuch' is not registered/,
      );
      const ghost = await rawRequest(port, "/clusters/ghost/api", ca, dev1Cert);
      assertStatus(ghost, 503, /cluster 'ghost' has no connected agent/);
      assert.equal(ghost.json?.reason, "ServiceUnavailable");
      const r = await kubectl(dev1, ["--context=ghost", "get", "configmaps"]);
      assert.equal(r.code, 1);
      // kubectl prints its own text for a 503 during discovery; the hub's reason reaches the user as a
      // warning (client-go prints every Warning header).
      assert.match(r.stderr, /ServiceUnavailable/);
      assert.match(r.stderr, /Warning: cluster 'ghost' has no connected agent/);
      await eventually(
        5_000,
        () =>
          assert.ok(
            auditLines(env).some((l) => l.cluster === "ghost" && l.user === "dev1" && l.status === 503),
          ),
      );

      const proxiedBefore = auditLines(env).filter((l) => l.agent).length;
      for (
        const path of [
          "/clusters/alpha/../beta/api",
          "/clusters/alpha/./api",
          "/clusters/al%70ha/api",
          "/clusters/ALPHA/api",
          "/clusters/alpha/%2e%2e/api",
          "/clusters/alpha/%2E%2E/beta/api",
          "/clusters/alpha/api/v1/namespaces%2fteam/configmaps",
          "/clusters/alpha/api/%zz",
          "/clusters/../clusters/alpha/api",
          "/clusters/alpha%2f..%2fbeta/api",
          "/clusters//alpha/api",
        ]
      ) {
        const res = await rawRequest(port, path, ca, dev1Cert);
        assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status} ${res.body}`);
        assert.equal(res.json?.kind, "Status", `${path}: ${res.body}`);
      }
      const after = auditLines(env);
      assert.equal(after.filter((l) => l.agent).length, proxiedBefore);
      assert.ok(!after.some((l) => String(l.path).includes("..")), "no dot segment was proxied");
    });

    await t.step(
      "passthrough: the user's own cluster credential, with a hub client certificate",
      async () => {
        // pat's hub kubeconfig plus alice's static token of beta's apiserver.
        const kc = YAML.parse(await Deno.readTextFile(pat));
        kc["current-context"] = "beta";
        kc.users[0].user.token = env.clusters.get("beta")!.tokens.alice;
        usedTokens.push(...Object.values(env.clusters.get("beta")!.tokens));
        usedTokens.push(...Object.values(alpha.tokens));
        const patAlice = join(dataDir, "pat-alice.kubeconfig");
        await Deno.writeTextFile(patAlice, YAML.stringify(kc), { mode: 0o600 });

        let r = await kubectl(patAlice, ["auth", "whoami", "-o", "json"]);
        assert.equal(r.code, 0, r.stderr);
        const me = whoami(r.stdout);
        assert.equal(me.username, "alice");
        assert.ok(me.groups.includes("devs"), JSON.stringify(me));
        r = await kubectl(patAlice, ["get", "configmaps", "-n", "default", "-o", "name"]);
        assert.equal(r.code, 0, r.stderr);
        r = await kubectl(patAlice, ["get", "secrets", "-n", "default"]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /User "alice" cannot list resource "secrets"/);
        // Client impersonation is stripped in passthrough too: still alice, not a failed impersonation.
        r = await kubectl(patAlice, [
          "--as=admin",
          "--as-group=system:masters",
          "auth",
          "whoami",
          "-o",
          "json",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(whoami(r.stdout).username, "alice");

        // Hub certificate but no cluster credential: the agent adds nothing, the apiserver sees anonymous.
        r = await kubectl(pat, ["--context=beta", "get", "configmaps", "-n", "default"]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /Forbidden.*system:anonymous/);

        // A hub token is not enough on a passthrough cluster: the Authorization header is the cluster's.
        const viaToken = await rawRequest(port, "/clusters/beta/api/v1/namespaces/default/configmaps", ca, {
          token: tok1,
        });
        assertStatus(viaToken, 401, /client certificate/);
        const aliceOnly = await rawRequest(port, "/clusters/beta/api", ca, {
          token: env.clusters.get("beta")!.tokens.alice,
        });
        assertStatus(aliceOnly, 401);

        // gamma is passthrough on the hub but its agent accepts only impersonation: the hub refuses.
        const gamma = await rawRequest(port, "/clusters/gamma/api", ca, {
          ...patCert,
          token: env.clusters.get("beta")!.tokens.alice,
        });
        assertStatus(gamma, 502, /cluster 'gamma' do not accept auth mode 'passthrough'/);
        r = await kubectl(pat, ["--context=gamma", "get", "configmaps"]);
        assert.equal(r.code, 1);
        // kubectl shows a 502 in discovery as a generic server error; the Status is checked raw above.
        assert.match(r.stderr, /Error from server/);
        await eventually(5_000, () => {
          const refused = auditLines(env).filter((l) => l.cluster === "gamma");
          assert.ok(refused.length > 0);
          for (const l of refused) {
            assert.equal(l.user, "pat");
            assert.equal(l.status, 502);
            assert.equal(l.agent, undefined);
          }
        });
      },
    );

    await t.step("dedicated cluster port: no prefix, same identity rules", async () => {
      const base = [`--server=https://127.0.0.1:${deltaPort}`];
      let r = await kubectl(dev1, [...base, "get", "configmaps", "-n", "team", "-o", "name"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /configmap\/seed/);
      r = await kubectl(dev1, [...base, "auth", "whoami", "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(whoami(r.stdout).username, "dev1");
      const raw = await rawRequest(deltaPort, "/api/v1/namespaces/team/configmaps", ca, dev1Cert);
      assert.equal(raw.status, 200, raw.body);
      assert.equal(raw.json?.kind, "ConfigMapList");
      assertStatus(
        await rawRequest(deltaPort, "/api/v1/namespaces/default/configmaps", ca, dev1Cert),
        403,
        /User "dev1"/,
      );
      assertStatus(
        await rawRequest(deltaPort, "/api/v1/namespaces", ca, patCert),
        403,
        /user 'pat' may not reach cluster 'delta'/,
      );
      assertStatus(await rawRequest(deltaPort, "/api/v1/namespaces", ca, {}), 401);
      assertStatus(await rawRequest(deltaPort, "/api/../../clusters/beta/api", ca, dev1Cert), 400);
      await eventually(5_000, () => {
        const l = auditLines(env).find((a) => a.cluster === "delta" && a.status === 200);
        assert.ok(l, "delta requests are audited");
        assert.equal(l.user, "dev1");
      });
    });

    await t.step("audit lines carry who, what, outcome and agent, and never a token", async () => {
      await eventually(5_000, () => {
        const lines = auditLines(env);
        const list = lines.find((l) =>
          l.user === "dev1" && l.cluster === "alpha" && l.verb === "list" &&
          l.path === "/api/v1/namespaces/team/configmaps" && l.status === 200
        );
        assert.ok(list, "dev1's list is audited");
        assert.deepEqual(list.groups, ["devs"]);
        assert.equal(typeof list.bytesOut, "number");
        assert.ok((list.bytesOut as number) > 0);
        assert.equal(typeof list.bytesIn, "number");
        assert.equal(typeof list.durationMs, "number");
        assert.equal(typeof list.agent, "string");
        assert.ok(
          lines.some((l) => l.user === "dev1" && l.verb === "create" && l.status === 201),
          "create is audited",
        );
        assert.ok(
          lines.some((l) => l.user === "dev1" && l.status === 403 && l.agent),
          "RBAC denial is audited",
        );
        assert.ok(lines.some((l) => l.user === "tok1" && l.status === 201), "token user is audited");
        assert.ok(
          lines.some((l) => l.user === undefined && l.status === 401),
          "anonymous refusal is audited",
        );
        assert.ok(lines.some((l) => l.cluster === "beta" && l.user === "pat" && l.status === 200));
      });
      const everything = [
        ...env.hub.stdout,
        env.hub.dump(),
        ...[...env.agents.values(), ...extraAgents].map((a) => a.dump() + a.stdout.join("\n")),
      ].join("\n");
      for (const token of usedTokens) {
        assert.ok(token.length > 10);
        assert.ok(!everything.includes(token), `a token leaked into logs: ${token.slice(0, 8)}…`);
      }
      // The agent's ServiceAccount token never appears at the hub either.
      assert.ok(!everything.includes(creds.token));
    });
  } finally {
    await Promise.all(extraAgents.map((a) => a.stop()));
    await env.stop();
  }
});

Deno.test("dedicated cluster port registered before the hub starts is served from the start", async () => {
  const dataDir = await scratchDir("port");
  const soloPort = await freePort();
  const { caFile } = parseIssued(
    await mustServer(["cluster", "add", "solo", "--port", String(soloPort), "--data-dir", dataDir]),
  );
  await mustServer(["user", "add", "ann", "--data-dir", dataDir]);
  const bea = /(tower_\S+)/.exec(
    await mustServer(["user", "add", "bea", "--token", "--data-dir", dataDir]),
  )![1]!;
  await mustServer(["access", "allow", "--user", "ann", "--clusters", "solo", "--data-dir", dataDir]);
  const kubeconfig = await mustServer(["kubeconfig", "--user", "ann", "--data-dir", dataDir]);
  const user = YAML.parse(kubeconfig).users[0].user;
  const ann = { cert: atob(user["client-certificate-data"]), key: atob(user["client-key-data"]) };
  const hub = await startHub({ dataDir });
  try {
    await hub.waitFor((l) => l.msg === "cluster port listening" && l.port === soloPort, "solo port");
    const ca = await Deno.readTextFile(caFile);
    // No agent yet: the request got past authentication and authorization to the agent lookup.
    assertStatus(await rawRequest(soloPort, "/api/v1/namespaces", ca, ann), 503, /cluster 'solo'/);
    assertStatus(await rawRequest(soloPort, "/api/v1/namespaces", ca, {}), 401);
    assertStatus(
      await rawRequest(soloPort, "/api/v1/namespaces", ca, { token: bea }),
      403,
      /user 'bea' may not reach cluster 'solo'/,
    );
    assert.ok(!hub.stdout.join("\n").includes(bea) && !hub.dump().includes(bea));
  } finally {
    await hub.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
