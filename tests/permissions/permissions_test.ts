/**
 * What each permission set in deno.json denies, shown by running a probe under it: the hub (`server`)
 * reads and writes only its data dirs (and reads a pod's ServiceAccount files) and sees only `TOWER_*` and
 * `KUBERNETES_SERVICE_*`; the agent (`agent`) reads only its config
 * and ServiceAccount files and writes nothing; the user-side `client` set (for `forward`) reads its
 * kubeconfig and writes nothing. None may run programs, load native code or reach the cloud
 * instance-metadata service. Why the hub still has `net` (UDP replies): README, "Permission sets". That
 * the entrypoints do their job under their sets is what every other test shows: they all run them with
 * `-P=server` / `-P=agent` / `-P=client`.
 * @module
 */

import assert from "node:assert/strict";
import { repoRoot, serverCommand } from "../helpers/tower_procs.ts";

/** Asserts that every attempt named in `want` came out as given. */
function expectOutcomes(got: Record<string, string>, want: Record<string, string>): void {
  assert.deepEqual(Object.fromEntries(Object.keys(want).map((k) => [k, got[k]])), want);
}

async function probe(set: string): Promise<Record<string, string>> {
  await Deno.mkdir("/tmp/tower", { recursive: true });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", `-P=${set}`, "--no-prompt", "tests/permissions/probe.ts"],
    cwd: repoRoot,
    env: { TOWER_PROBE: "1", HOME: "/root" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const denied = "NotCapable";

Deno.test("permission set server: listens, reads and writes only its data dirs, no metadata service", async () => {
  expectOutcomes(await probe("server"), {
    listenAny: "ok",
    listenLoopback: "ok",
    dialMetadata: denied,
    readEtc: denied,
    readDataDir: "ok",
    readServiceAccount: "granted", // the hub in a host cluster (--registry kubernetes)
    writeOutside: denied,
    writeDataDir: "ok",
    run: denied,
    ffi: denied,
    envHome: "Hidden", // other variables read as unset: @kubernetes/client-node probes many
    envTower: "ok",
  });
});

Deno.test("permission set agent: dials, reads only its files, writes nothing", async () => {
  const r = await probe("agent");
  expectOutcomes(r, {
    dialMetadata: denied,
    readEtc: denied,
    readDataDir: "ok",
    readServiceAccount: "granted",
    writeOutside: denied,
    writeDataDir: denied,
    run: denied,
    ffi: denied,
    envHome: "Hidden", // other variables read as unset, for libraries that probe them
    envTower: "ok",
  });
  // Dialing is allowed (the hub, a proxy, the API server); 192.0.2.1 just does not answer.
  assert.notEqual(r.dialElsewhere, denied);
});

Deno.test("permission set client: `forward` dials the hub and reads a kubeconfig, writes nothing", async () => {
  const r = await probe("client");
  expectOutcomes(r, {
    dialMetadata: denied,
    readEtc: "ok",
    writeOutside: denied,
    writeDataDir: denied,
    run: denied,
    ffi: denied,
    // other variables read as unset: the undici that @kubernetes/client-node carries probes several
    // (UNDICI_USE_MILO, UNDICI_NO_WASM_SIMD) when `forward` loads, and a list of names breaks on its next release
    envTower: "ok",
  });
  assert.notEqual(r.dialElsewhere, denied);
});

Deno.test("`forward` under the hub's own set stops with a message naming the set to use", async () => {
  // Outside the hub's data dirs, like a user's ~/.kube.
  const dir = `/tmp/tower-perm-${crypto.randomUUID()}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    const kubeconfig = `${dir}/user.kubeconfig`;
    await Deno.writeTextFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{name: edge, cluster: {server: "https://192.0.2.1:8443/clusters/edge", certificate-authority-data: "${
        btoa("not checked before the dial")
      }"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: edge, context: {cluster: edge, user: u}}]
current-context: edge
`,
    );
    const r = await serverCommand([
      "forward",
      "--kubeconfig",
      kubeconfig,
      "edge/default/web:80",
      "127.0.0.1:0",
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /client set \(deno task forward/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
