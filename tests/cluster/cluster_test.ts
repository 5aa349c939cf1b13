/**
 * Two real clusters started in parallel, exercised directly (no hub): kubectl, isolation from the
 * root namespace, kwok exec/logs/attach/port-forward, the agent's credentials and RBAC, teardown.
 */

import assert from "node:assert/strict";
import { AGENT_NAMESPACE, startClusters, type TestCluster } from "./cluster.ts";
import { leftovers, netnsPids, StreamText } from "./_test_helpers.ts";
import { within } from "../helpers/wait.ts";

const DEPLOYMENT_FILE = new URL("../../deploy/agent/deployment.yaml", import.meta.url).pathname;

async function ok(
  c: TestCluster,
  args: string[],
  opts: Parameters<TestCluster["kubectl"]>[1] = {},
): Promise<string> {
  const r = await c.kubectl(args, opts);
  assert.equal(r.code, 0, `kubectl ${args.join(" ")} on ${c.name}: ${r.stderr}`);
  return r.stdout;
}

/** Starts a TCP echo server on 127.0.0.1:port inside the cluster's namespace. */
async function echoServer(c: TestCluster, port: number): Promise<{ stop(): Promise<void> }> {
  const code = `const l = Deno.listen({ hostname: "127.0.0.1", port: ${port} });
console.log("listening");
for await (const conn of l) conn.readable.pipeTo(conn.writable).catch(() => {});`;
  const child = c.spawnInNetns([Deno.execPath(), "eval", code], { stdout: "piped" });
  const out = new StreamText(child.stdout);
  await out.waitFor(/listening/);
  return {
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await out.done;
    },
  };
}

Deno.test("two real clusters: kubectl, isolation, exec/logs/port-forward, agent RBAC, teardown", async (t) => {
  const t0 = Date.now();
  const clusters = await within(120_000, "startClusters", startClusters(["cluster-a", "cluster-b"]));
  const startedMs = Date.now() - t0;
  const pids = new Map<string, number[]>();
  try {
    // How fast a cluster starts is a benchmark's business (it depends on the machine's load); what this
    // test owns is that the two start side by side: together they take less than one after the other.
    await t.step("both start in parallel", () => {
      const sequentialMs = clusters.reduce((sum, c) => sum + c.startupMs, 0);
      assert.ok(
        startedMs < sequentialMs,
        `startClusters took ${startedMs} ms, not less than one after the other (${sequentialMs} ms)`,
      );
      assert.notEqual(clusters[0]!.netns, clusters[1]!.netns);
      assert.notEqual(clusters[0]!.hubAddress, clusters[1]!.hubAddress);
      assert.ok(clusters.every((c) => c.dir.startsWith("/tmp/tower/")));
    });

    await t.step("kubectl works inside each namespace, and the clusters are distinct", async () => {
      for (const c of clusters) {
        const ns = await ok(c, ["get", "ns", "-o", "name"]);
        assert.match(ns, /namespace\/default/);
        assert.match(ns, /namespace\/kube-system/);
        await ok(c, ["create", "configmap", "whoami", `--from-literal=cluster=${c.name}`]);
        assert.equal(await ok(c, ["get", "node", c.nodeName, "-o", "jsonpath={.metadata.name}"]), c.nodeName);
        assert.match(await ok(c, ["version", "-o", "json"]), /"gitVersion": "v1\.36\.3"/);
      }
      for (const c of clusters) {
        assert.equal(await ok(c, ["get", "configmap", "whoami", "-o", "jsonpath={.data.cluster}"]), c.name);
      }
    });

    await t.step("static tokens authenticate with their groups", async () => {
      const c = clusters[0]!;
      assert.equal(
        await ok(c, ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
          token: c.tokens.alice!,
        }),
        "alice",
      );
      assert.equal((await ok(c, ["auth", "can-i", "get", "pods"], { token: c.tokens.admin! })).trim(), "yes");
      const denied = await c.kubectl(["get", "pods"], { token: c.tokens.alice! });
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /forbidden: User "alice" cannot list resource "pods"/);
      const bad = await c.kubectl(["get", "pods"], { token: "not-a-token" });
      assert.match(bad.stderr, /Unauthorized|must be logged in/);
    });

    await t.step("the apiserver is unreachable from the root namespace", async () => {
      for (const c of clusters) {
        // Its loopback is not ours, and it does not listen on the namespace's veth address.
        await assert.rejects(
          Deno.connect({ hostname: c.nsAddress, port: 6443 }),
          Deno.errors.ConnectionRefused,
        );
        const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(c.caFile)] });
        try {
          await assert.rejects(
            within(
              10_000,
              "fetch",
              fetch(`${c.apiserverUrl}/readyz`, { client }).then((r) => r.body?.cancel()),
            ),
          );
        } finally {
          client.close();
        }
        // …while inside the namespace the very same URL answers.
        assert.equal(await ok(c, ["get", "--raw=/readyz"]), "ok");
      }
    });

    await t.step("a server in the root namespace is reachable from inside at hubAddress", async () => {
      const c = clusters[1]!;
      const listener = Deno.listen({ hostname: c.hubAddress, port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      const accepted = listener.accept().then(async (conn) => {
        const buf = new Uint8Array(64);
        const n = await conn.read(buf);
        conn.close();
        return new TextDecoder().decode(buf.subarray(0, n ?? 0));
      });
      const code = `const c = await Deno.connect({ hostname: "${c.hubAddress}", port: ${port} });
await c.write(new TextEncoder().encode("from ${c.netns}")); c.close();`;
      const child = c.spawnInNetns([Deno.execPath(), "eval", code]);
      try {
        assert.equal(await within(15_000, "connect to hub address", accepted), `from ${c.netns}`);
        assert.equal((await child.status).code, 0);
      } finally {
        listener.close();
      }
    });

    await t.step("kwok exec runs real commands (stdout, stdin, failure)", async () => {
      for (const c of clusters) {
        await c.createPod("box");
        assert.equal(await ok(c, ["exec", "box", "--", "echo", "hi"]), "hi\n");
        // Runs inside the cluster's namespace: it sees that namespace's veth address.
        assert.match(
          await ok(c, ["exec", "box", "--", "cat", "/proc/net/fib_trie"]),
          new RegExp(c.nsAddress.replaceAll(".", "\\.")),
        );
        // kwok 0.8 never closes the command's stdin, so read a line rather than to EOF.
        assert.equal(
          await ok(c, ["exec", "-i", "box", "--", "sh", "-c", "read l; echo got:$l"], { stdin: "abc\n" }),
          "got:abc\n",
        );
        const fail = await c.kubectl(["exec", "box", "--", "sh", "-c", "echo out; exit 3"]);
        assert.notEqual(fail.code, 0);
        assert.equal(fail.stdout, "out\n");
        // kwok 0.8 reports a failed command as an internal error, not as the exit code.
        assert.match(fail.stderr, /exit status 3/);
      }
    });

    await t.step("kwok logs come from the CRI file, and -f sees appended lines", async () => {
      for (const c of clusters) {
        assert.match(await ok(c, ["logs", "box"]), new RegExp(`hello from ${c.name}`));
        const follow = c.spawnKubectl(["logs", "-f", "box"], { stdout: "piped" });
        const out = new StreamText(follow.stdout);
        try {
          await out.waitFor(new RegExp(`hello from ${c.name}`));
          await c.appendPodLog(`appended to ${c.name}`);
          await out.waitFor(new RegExp(`appended to ${c.name}`));
        } finally {
          follow.kill("SIGKILL");
          await follow.status;
          await out.done;
        }
      }
    });

    await t.step("kwok attach streams lines appended to the CRI file", async () => {
      const c = clusters[0]!;
      const attach = c.spawnKubectl(["attach", "box"], { stdout: "piped", stderr: "null" });
      const out = new StreamText(attach.stdout);
      try {
        // attach follows from the end of the file; append until a line shows up (it may attach late).
        for (let i = 0; !/attach-line/.test(out.text); i++) {
          assert.ok(i < 50, `attach showed nothing: ${out.text}`);
          await c.appendPodLog(`attach-line ${i}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        attach.kill("SIGKILL");
        await attach.status;
        await out.done;
      }
    });

    await t.step("kwok port-forward reaches a real TCP server in the namespace", async () => {
      for (const c of clusters) {
        const echo = await echoServer(c, 8080);
        const pf = c.spawnKubectl(["port-forward", "--address", c.nsAddress, "pod/box", "18080:8080"], {
          stdout: "piped",
          stderr: "piped",
        });
        const out = new StreamText(pf.stdout);
        const err = new StreamText(pf.stderr);
        try {
          await out.waitFor(/Forwarding from/);
          // The test connects from the root namespace to kubectl's local end on the namespace's address.
          const conn = await Deno.connect({ hostname: c.nsAddress, port: 18080 });
          try {
            const payload = new TextEncoder().encode(`round trip via ${c.name} `.repeat(1000));
            const reading = (async () => {
              const got = new Uint8Array(payload.length);
              let n = 0;
              while (n < got.length) {
                const r = await conn.read(got.subarray(n));
                if (r === null) break;
                n += r;
              }
              return got.subarray(0, n);
            })();
            await conn.write(payload);
            assert.deepEqual(await within(15_000, "echo", reading), payload);
          } finally {
            conn.close();
          }
        } finally {
          pf.kill("SIGKILL");
          await pf.status;
          await Promise.all([out.done, err.done]);
          await echo.stop();
        }
      }
    });

    await t.step(
      "agentCredentials: the agent token has exactly the RBAC of deploy/agent/rbac.yaml",
      async () => {
        for (const c of clusters) {
          const creds = await c.agentCredentials();
          assert.equal(await Deno.readTextFile(`${creds.saDir}/token`), creds.token);
          assert.equal(await Deno.readTextFile(`${creds.saDir}/namespace`), AGENT_NAMESPACE);
          assert.equal(await Deno.readTextFile(`${creds.saDir}/ca.crt`), await Deno.readTextFile(c.caFile));
          assert.deepEqual(creds.env, {
            KUBERNETES_SERVICE_HOST: "127.0.0.1",
            KUBERNETES_SERVICE_PORT: "6443",
          });
          assert.ok(creds.saDir.startsWith(c.dir));
          const asAgent = { token: creds.token };
          assert.equal(
            await ok(c, ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], asAgent),
            "system:serviceaccount:tower-system:tower-agent",
          );
          const checks: Promise<void>[] = [];
          const canI = async (...args: string[]) =>
            (await c.kubectl(["auth", "can-i", ...args], asAgent)).stdout.trim();
          for (
            const allowed of [
              ["impersonate", "users"],
              ["impersonate", "groups"],
              ["impersonate", "serviceaccounts"],
              ["list", "services", "-A"],
              ["watch", "services", "-A"],
              ["get", "services", "-n", "default"],
              ["list", "endpointslices.discovery.k8s.io", "-A"],
              ["watch", "endpointslices.discovery.k8s.io", "-A"],
              ["patch", "services", "--subresource=status", "-n", "default"],
              ["update", "services", "--subresource=status", "-n", "default"],
              ["create", "events", "-n", "default"],
              ["patch", "events", "-n", "default"],
              ["create", "events.events.k8s.io", "-n", "default"],
              ["patch", "events.events.k8s.io", "-n", "default"],
            ]
          ) {
            checks.push(
              canI(...allowed).then((r) => assert.equal(r, "yes", `agent can ${allowed.join(" ")}`)),
            );
          }
          for (
            const denied of [
              ["get", "secrets", "-n", "default"],
              ["list", "secrets", "-A"],
              ["get", "pods", "-n", "default"],
              ["create", "pods/exec", "-n", "default"],
              ["update", "services", "-n", "default"],
              ["delete", "services", "-n", "default"],
              ["create", "services", "-n", "default"],
              ["list", "endpoints", "-A"],
              ["list", "nodes"],
              ["get", "configmaps", "-n", "default"],
              ["delete", "events", "-n", "default"],
              ["create", "tokenreviews.authentication.k8s.io"],
              ["*", "*"],
            ]
          ) {
            checks.push(
              canI(...denied).then((r) => assert.equal(r, "no", `agent cannot ${denied.join(" ")}`)),
            );
          }
          for (const r of await Promise.allSettled(checks)) if (r.status === "rejected") throw r.reason;
          // uids and userextras are not discoverable, so `kubectl auth can-i` cannot ask about them; a
          // SubjectAccessReview can.
          const agentUser = {
            user: "system:serviceaccount:tower-system:tower-agent",
            groups: ["system:serviceaccounts", "system:serviceaccounts:tower-system", "system:authenticated"],
          };
          const review = async (resourceAttributes: Record<string, string>) =>
            await ok(c, ["create", "-o", "jsonpath={.status.allowed}", "-f", "-"], {
              stdin: JSON.stringify({
                apiVersion: "authorization.k8s.io/v1",
                kind: "SubjectAccessReview",
                spec: { ...agentUser, resourceAttributes },
              }),
            });
          const authn = "authentication.k8s.io";
          assert.equal(
            await review({ verb: "impersonate", group: authn, resource: "uids", name: "u-1" }),
            "true",
          );
          assert.equal(
            await review({
              verb: "impersonate",
              group: authn,
              resource: "userextras",
              subresource: "scopes",
              name: "x",
            }),
            "true",
          );
          assert.equal(await review({ verb: "create", group: authn, resource: "tokenreviews" }), "false");
          assert.equal(
            await review({ verb: "get", group: "", resource: "secrets", namespace: "default" }),
            "false",
          );
          // Impersonation really works with this token: as alice it is alice's (lack of) rights that count.
          const asAlice = await c.kubectl(
            ["get", "configmap", "whoami", "--as=alice", "--as-group=devs", "--as-uid=uid-2"],
            asAgent,
          );
          assert.match(asAlice.stderr, /User "alice" cannot get resource "configmaps"/);
          const asAdmin = await ok(c, [
            "get",
            "configmap",
            "whoami",
            "-o",
            "jsonpath={.data.cluster}",
            "--as=root",
            "--as-group=system:masters",
          ], asAgent);
          assert.equal(asAdmin, c.name);
        }
      },
    );

    await t.step("a second cluster of the same name in this process gets its own namespace", async () => {
      const [again] = await within(60_000, "startClusters", startClusters(["cluster-a"]));
      try {
        assert.equal(again!.netns, `${clusters[0]!.netns}-2`);
        assert.notEqual(again!.vethName, clusters[0]!.vethName);
        assert.notEqual(again!.dir, clusters[0]!.dir);
        const cm = await again!.kubectl(["get", "configmap", "whoami"]);
        assert.match(cm.stderr, /NotFound/);
      } finally {
        await again!.stop();
      }
      assert.equal(
        await ok(clusters[0]!, ["get", "configmap", "whoami", "-o", "jsonpath={.data.cluster}"]),
        "cluster-a",
      );
    });

    await t.step(
      "deploy/agent/deployment.yaml is accepted by the apiserver (server-side dry run)",
      async () => {
        const c = clusters[0]!;
        const out = await ok(c, ["apply", "--dry-run=server", "-f", DEPLOYMENT_FILE]);
        assert.match(out, /deployment\.apps\/tower-agent created \(server dry run\)/);
      },
    );
  } finally {
    for (const c of clusters) pids.set(c.name, await netnsPids(c.netns));
    await Promise.all(clusters.map((c) => c.stop()));
  }

  await t.step("stop() leaves no namespace, veth, process or dir behind", async () => {
    for (const c of clusters) {
      const p = pids.get(c.name)!;
      assert.ok(p.length >= 3, `expected etcd, apiserver and kwok in ${c.netns}, saw ${p}`);
      assert.deepEqual(await leftovers(c, p), { netns: false, veth: false, livePids: [], dir: false });
    }
    await clusters[0]!.stop(); // idempotent
  });
});
