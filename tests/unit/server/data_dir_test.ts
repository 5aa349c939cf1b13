/** The hub's data dir: half a CA is refused, and the serving certificate follows the names asked for. */

import assert from "node:assert/strict";
import { ConfigError } from "../../../lib/config/mod.ts";
import { dataPaths, loadCa, loadServingCert } from "../../../lib/server/data_dir.ts";
import { certNames } from "../../../lib/server/tls_material.ts";
import { scratchDir } from "../../helpers/tower_procs.ts";

Deno.test("loadCa refuses a data dir with ca.crt but no ca.key (or the reverse) and leaves it as it was", async () => {
  const dir = await scratchDir("datadir");
  try {
    const ca = await loadCa(dir);
    assert.deepEqual(await loadCa(dir), ca, "an existing CA is loaded as is");
    const p = dataPaths(dir);
    const key = await Deno.readTextFile(p.caKey);
    await Deno.remove(p.caKey);
    await assert.rejects(() => loadCa(dir), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /ca\.key is missing but .*ca\.crt exists: restore/);
      return true;
    });
    assert.equal(await Deno.readTextFile(p.caCert), ca.cert, "ca.crt was not overwritten");
    await Deno.writeTextFile(p.caKey, key);
    await Deno.remove(p.caCert);
    await assert.rejects(() => loadCa(dir), /ca\.crt is missing but .*ca\.key exists/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadServingCert is issued again when a later start asks for names it lacks, and only then", async () => {
  const dir = await scratchDir("datadir");
  try {
    const ca = await loadCa(dir);
    const first = await loadServingCert(dir, ca, ["hub.example.com"]);
    assert.ok(certNames(first.cert).includes("hub.example.com"));
    assert.deepEqual(await loadServingCert(dir, ca, ["HUB.example.com"]), first, "same names: kept");
    const second = await loadServingCert(dir, ca, ["hub.example.com", "10.9.8.7", "2001:db8::0:1"]);
    assert.notEqual(second.cert, first.cert);
    const names = certNames(second.cert);
    for (const n of ["hub.example.com", "localhost", "10.9.8.7", "2001:db8::1", "127.0.0.1", "::1"]) {
      assert.ok(names.includes(n), `${n} in ${names.join(", ")}`);
    }
    assert.deepEqual(await loadServingCert(dir, ca, ["10.9.8.7"]), second, "a subset: kept");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
