/** Binary lookup: TOWER_K8S_BIN, KUBEBUILDER_ASSETS, the build cache, and the message without Go. */

import assert from "node:assert/strict";
import { buildCacheDir, findBinaries, findKwokStages } from "./bins.ts";

const BINS_TS = new URL("./bins.ts", import.meta.url).href;

async function fakeBinDir(names: string[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tower-bins-test-" });
  for (const n of names) await Deno.writeTextFile(`${dir}/${n}`, "#!/bin/sh\n", { mode: 0o755 });
  return dir;
}

Deno.test("TOWER_K8S_BIN is honoured and must hold all four binaries", async () => {
  const dir = await fakeBinDir(["kube-apiserver", "kubectl", "etcd", "kwok"]);
  const partial = await fakeBinDir(["kube-apiserver", "kubectl", "etcd"]);
  try {
    const env = { TOWER_K8S_BIN: dir, KUBEBUILDER_ASSETS: "/nonexistent", PATH: "" };
    assert.deepEqual(await findBinaries({ env }), {
      kubeApiserver: `${dir}/kube-apiserver`,
      kubectl: `${dir}/kubectl`,
      etcd: `${dir}/etcd`,
      kwok: `${dir}/kwok`,
      source: "TOWER_K8S_BIN",
    });
    await assert.rejects(
      findBinaries({ env: { TOWER_K8S_BIN: partial } }),
      /TOWER_K8S_BIN=.* lacks executable kwok/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(partial, { recursive: true });
  }
});

Deno.test("KUBEBUILDER_ASSETS is honoured; kwok then comes from the build cache", async () => {
  const assets = await fakeBinDir(["kube-apiserver", "kubectl", "etcd"]);
  try {
    const env: Record<string, string> = { ...Deno.env.toObject(), KUBEBUILDER_ASSETS: assets };
    delete env.TOWER_K8S_BIN;
    const b = await findBinaries({ env });
    assert.equal(b.source, "KUBEBUILDER_ASSETS");
    assert.equal(b.kubeApiserver, `${assets}/kube-apiserver`);
    assert.equal(b.kwok, `${await buildCacheDir({ env })}/kwok`);
  } finally {
    await Deno.remove(assets, { recursive: true });
  }
});

Deno.test("the build cache is used when nothing is set, and a cached start is instant", async () => {
  const env = Deno.env.toObject();
  delete env.TOWER_K8S_BIN;
  delete env.KUBEBUILDER_ASSETS;
  await findBinaries({ env }); // builds on a fresh machine (slow once); everything below is cached
  const t0 = Date.now();
  const b = await findBinaries({ env });
  assert.ok(Date.now() - t0 < 3_000, `cached lookup took ${Date.now() - t0} ms`);
  const dir = await buildCacheDir({ env });
  assert.match(dir, /\/tower\/k8s-v1\.36\.3-etcd-v3\.6\.16-kwok-v0\.8\.0\/bin$/);
  assert.deepEqual(b, {
    kubeApiserver: `${dir}/kube-apiserver`,
    kubectl: `${dir}/kubectl`,
    etcd: `${dir}/etcd`,
    kwok: `${dir}/kwok`,
    source: "build cache",
  });
  const version = await new Deno.Command(b.kubectl, { args: ["version", "--client", "-o", "json"] }).output();
  assert.match(new TextDecoder().decode(version.stdout), /"gitVersion": "v1\.36\.3"/);
  // build.sh keeps kwok's stage YAML next to the binaries, so a cluster needs no Go once built.
  assert.equal(await findKwokStages({ env }), `${dir}/kwok-stage`);
});

Deno.test("a TOWER_K8S_BIN dir with binaries and kwok-stage needs no Go and no module cache", async () => {
  const dir = await buildCacheDir();
  const home = await Deno.makeTempDir({ prefix: "tower-givenbin-" });
  try {
    const given = `${home}/bin`;
    await Deno.mkdir(given);
    for (const f of ["kube-apiserver", "kubectl", "etcd", "kwok", "kwok-stage"]) {
      await Deno.symlink(`${dir}/${f}`, `${given}/${f}`);
    }
    const code = `import { findBinaries, findKwokStages } from ${JSON.stringify(BINS_TS)};
console.log(JSON.stringify({ bins: await findBinaries(), stages: await findKwokStages() }));`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      cwd: home,
      clearEnv: true,
      env: {
        PATH: "",
        HOME: home,
        XDG_CACHE_HOME: `${home}/cache`,
        DENO_DIR: `${home}/deno`,
        TOWER_K8S_BIN: given,
        NO_COLOR: "1",
      },
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const got = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(got.bins.source, "TOWER_K8S_BIN");
    assert.equal(got.bins.kubeApiserver, `${given}/kube-apiserver`);
    assert.equal(got.stages, `${given}/kwok-stage`);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("without Go and without binaries the error says what to install or set", async () => {
  const home = await Deno.makeTempDir({ prefix: "tower-nogo-" });
  try {
    // A separate process with an empty PATH (so no Go) and an empty cache dir (so no binaries).
    const code = `import { findBinaries, findKwokStages } from ${JSON.stringify(BINS_TS)};
for (const f of [findBinaries, findKwokStages]) {
  try { await f(); console.log("NO ERROR"); } catch (e) { console.log("ERROR: " + e.message); }
}`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      cwd: home,
      clearEnv: true,
      env: { PATH: "", HOME: home, XDG_CACHE_HOME: `${home}/cache`, DENO_DIR: `${home}/deno`, NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const lines = text.trim().split("\n");
    assert.equal(lines.length, 2, text + new TextDecoder().decode(out.stderr));
    assert.match(lines[0]!, /^ERROR: tower test cluster: kube-apiserver, kubectl, etcd, kwok not found in /);
    assert.ok(lines[0]!.includes(`${home}/cache/tower/`), lines[0]!);
    assert.match(lines[0]!, /Go is not on PATH\. Install Go >= 1\.26/);
    assert.match(lines[0]!, /set TOWER_K8S_BIN to a dir holding kube-apiserver, kubectl, etcd and kwok/);
    assert.match(
      lines[1]!,
      /^ERROR: tower test cluster: kwok's stage YAML .* Go is not on PATH\. Install Go/,
    );
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
