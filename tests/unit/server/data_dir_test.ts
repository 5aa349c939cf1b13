/** The hub's data dir: half a CA is refused, and the serving certificate follows the names asked for. */

import assert from "node:assert/strict";
import { ConfigError } from "../../../lib/config/mod.ts";
import { DataDir } from "../../../lib/server/data_dir.ts";
import { certNames } from "../../../lib/server/tls_material.ts";
import { scratchDir } from "../../helpers/tower_procs.ts";

Deno.test("DataDir.ca refuses a data dir with ca.crt but no ca.key (or the reverse) and leaves it as it was", async () => {
  const dir = await scratchDir("datadir");
  const data = new DataDir(dir);
  try {
    const ca = await data.ca();
    assert.deepEqual(await new DataDir(dir).ca(), ca, "an existing CA is loaded as is");
    const p = data.paths;
    const key = await Deno.readTextFile(p.caKey);
    await Deno.remove(p.caKey);
    await assert.rejects(() => data.ca(), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /ca\.key is missing but .*ca\.crt exists: restore/);
      return true;
    });
    assert.equal(await Deno.readTextFile(p.caCert), ca.cert, "ca.crt was not overwritten");
    await Deno.writeTextFile(p.caKey, key);
    await Deno.remove(p.caCert);
    await assert.rejects(() => data.ca(), /ca\.crt is missing but .*ca\.key exists/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("DataDir.servingCert is issued again when a later start asks for names it lacks, and only then", async () => {
  const dir = await scratchDir("datadir");
  const data = new DataDir(dir);
  try {
    const ca = await data.ca();
    const first = await data.servingCert(ca, ["hub.example.com"]);
    assert.ok(certNames(first.cert).includes("hub.example.com"));
    assert.deepEqual(await data.servingCert(ca, ["HUB.example.com"]), first, "same names: kept");
    const second = await data.servingCert(ca, ["hub.example.com", "10.9.8.7", "2001:db8::0:1"]);
    assert.notEqual(second.cert, first.cert);
    const names = certNames(second.cert);
    for (const n of ["hub.example.com", "localhost", "10.9.8.7", "2001:db8::1", "127.0.0.1", "::1"]) {
      assert.ok(names.includes(n), `${n} in ${names.join(", ")}`);
    }
    assert.deepEqual(await data.servingCert(ca, ["10.9.8.7"]), second, "a subset: kept");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("DataDir: paths inside the dir, host key created once and kept, registry file opened", async () => {
  const dir = await scratchDir("datadir");
  const data = new DataDir(dir);
  try {
    assert.equal(data.caLocation, `${dir}/ca.crt`);
    assert.equal(data.paths.adminSockets, `${dir}/admin`);
    assert.equal(data.paths.replicas, `${dir}/replicas`);
    const key = await data.hostKey();
    assert.match(key.fingerprint, /^SHA256:/);
    assert.deepEqual(await new DataDir(dir).hostKey(), key, "an existing host key is loaded as is");
    assert.equal((await Deno.stat(data.paths.hostKey)).mode! & 0o777, 0o600);
    const registry = await data.registry();
    assert.deepEqual((await registry.read()).clusters, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
