/**
 * Cluster labels and label-selected access through the admin commands (real processes, server permission
 * set): `cluster add --label`, `cluster label k=v|k-`, `access allow --cluster-selector`, and the
 * kubeconfig listing exactly the clusters a user may reach as labels change.
 * @module
 */

import assert from "node:assert/strict";
import YAML from "yaml";
import { type HubProcess, scratchDir, serverCommand, startHub } from "../helpers/tower_procs.ts";

async function run(
  dir: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [a, b, ...rest] = args;
  return await serverCommand([a!, ...(b === undefined ? [] : [b]), "--data-dir", dir, ...rest]);
}

async function must(dir: string, ...args: string[]): Promise<string> {
  const r = await run(dir, ...args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Cluster names in the kubeconfig `kubeconfig --user` prints, or the error when it refuses. */
async function kubeconfigClusters(dir: string, user: string): Promise<string[] | string> {
  const r = await serverCommand(["kubeconfig", "--data-dir", dir, "--user", user, "--server", "https://h:1"]);
  if (r.code !== 0) return r.stderr;
  return (YAML.parse(r.stdout).clusters as { name: string }[]).map((c) => c.name);
}

Deno.test("labels select clusters for access rules, and the kubeconfig follows relabelling", async () => {
  const dir = await scratchDir("labels");
  try {
    await must(dir, "cluster", "add", "alpha", "--label", "env=prod", "--label", "region=eu");
    await must(dir, "cluster", "add", "beta", "--label", "env=staging");
    await must(dir, "cluster", "add", "gamma", "--label", "env=dev");
    await must(dir, "cluster", "add", "delta");
    const list = await must(dir, "cluster", "list");
    assert.match(list, /^alpha\s.*\senv=prod,region=eu$/m);
    assert.match(list, /^delta\s.*\s-$/m);

    await must(dir, "user", "add", "ann", "--group", "sre");
    await must(dir, "user", "add", "bob", "--group", "dev");
    const allowed = await must(
      dir,
      "access",
      "allow",
      "--group",
      "sre",
      "--cluster-selector",
      "env in (prod,staging)",
    );
    assert.match(allowed, /Allowed group sre on clusters labelled 'env in \(prod,staging\)'/);
    await must(dir, "access", "allow", "--user", "bob", "--clusters", "*a", "--cluster-selector", "!env");
    assert.match(
      await must(dir, "access", "list"),
      /groups=sre\tclusters=-\tselector=env in \(prod,staging\)/,
    );

    assert.deepEqual(await kubeconfigClusters(dir, "ann"), ["alpha", "beta"]);
    assert.deepEqual(await kubeconfigClusters(dir, "bob"), ["delta"]);

    assert.match(
      await must(dir, "cluster", "label", "gamma", "env=staging", "tier=web"),
      /env=staging,tier=web/,
    );
    assert.match(await must(dir, "cluster", "label", "alpha", "env-"), /labels: region=eu$/m);
    assert.deepEqual(await kubeconfigClusters(dir, "ann"), ["beta", "gamma"]);
    // bob: names ending in 'a' (glob) AND without an env label (selector).
    assert.deepEqual(await kubeconfigClusters(dir, "bob"), ["alpha", "delta"]);

    await must(dir, "cluster", "label", "beta", "env-");
    await must(dir, "cluster", "label", "gamma", "env=dev");
    assert.match(String(await kubeconfigClusters(dir, "ann")), /may reach no cluster yet/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad labels and selectors are refused with exit code 2 and a message that names the problem", async () => {
  const dir = await scratchDir("labels");
  try {
    await must(dir, "cluster", "add", "alpha");
    await must(dir, "user", "add", "ann");
    const cases: [string[], RegExp][] = [
      [["cluster", "add", "beta", "--label", "env"], /label 'env' must be KEY=VALUE$/m],
      [["cluster", "add", "beta", "--label", "env-"], /label 'env-' must be KEY=VALUE$/m],
      [["cluster", "add", "beta", "--label=-x=y"], /label key '-x'/],
      [["cluster", "label", "alpha", "env=a b"], /label value 'a b'/],
      [["cluster", "label", "alpha", "env"], /must be KEY=VALUE or KEY- \(to remove it\)/],
      [["cluster", "label", "alpha"], /at least one KEY=VALUE or KEY-/],
      [["cluster", "label", "nope", "a=b"], /cluster 'nope' does not exist/],
      [
        ["access", "allow", "--user", "ann", "--cluster-selector", "env in prod"],
        /expected '\(' .* at position 8/,
      ],
      [["access", "allow", "--user", "ann", "--cluster-selector", ""], /empty; use --clusters '\*'/],
      [["access", "allow", "--user", "ann"], /needs --clusters GLOB\[,GLOB\] or --cluster-selector/],
    ];
    for (const [args, want] of cases) {
      const r = await run(dir, ...args);
      assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, want, args.join(" "));
    }
    const labels = Array.from({ length: 65 }, (_, i) => `k${i}=v`);
    const r = await run(dir, "cluster", "label", "alpha", ...labels);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /at most 64 labels, got 65/);
    await must(dir, "cluster", "label", "alpha", ...labels.slice(0, 64));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The status a token user's request to `cluster` gets from the hub: 403 not allowed, 503 allowed but no agent. */
async function statusOf(hub: HubProcess, ca: string, token: string, cluster: string): Promise<number> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const r = await fetch(`https://127.0.0.1:${hub.port}/clusters/${cluster}/api`, {
      headers: { authorization: `Bearer ${token}` },
      client,
    });
    await r.body?.cancel();
    return r.status;
  } finally {
    client.close();
  }
}

Deno.test("a running hub applies relabelling from the next request on: grant, then revoke", async () => {
  const dir = await scratchDir("labels");
  let hub: HubProcess | undefined;
  try {
    await must(dir, "cluster", "add", "alpha", "--label", "env=dev");
    const out = await must(dir, "user", "add", "ann", "--group", "sre", "--token");
    const token = /(tower_[A-Za-z0-9_-]{43})/.exec(out)![1]!;
    await must(dir, "access", "allow", "--group", "sre", "--cluster-selector", "env in (prod,staging)");
    hub = await startHub({ dataDir: dir });
    const ca = await Deno.readTextFile(`${dir}/ca.crt`);
    assert.equal(await statusOf(hub, ca, token, "alpha"), 403);
    await must(dir, "cluster", "label", "alpha", "env=prod");
    // Once the hub has seen the change, the very next request is judged on the new labels.
    const changed = (env: string | undefined) => (l: { msg: string; labels?: unknown }) =>
      l.msg === "cluster labels changed" && (l.labels as Record<string, string>).env === env;
    await hub.waitFor(changed("prod"), "labels env=prod");
    assert.equal(await statusOf(hub, ca, token, "alpha"), 503, "allowed (no agent)");
    await must(dir, "cluster", "label", "alpha", "env-");
    await hub.waitFor(changed(undefined), "labels without env");
    assert.equal(await statusOf(hub, ca, token, "alpha"), 403);
  } finally {
    await hub?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
