/** Join tokens and the YAML-file registry: round trip, atomic writes, validation, lock, watch. @module */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import YAML from "yaml";
import {
  emptyRegistry,
  FileRegistry,
  hashToken,
  isCertEpoch,
  isTokenHash,
  newCertEpoch,
  newToken,
  type RegistryData,
  serialInEpoch,
  tokenMatches,
  validateRegistry,
} from "../../../lib/registry/mod.ts";
import { withScratchDir } from "../../helpers/tower_procs.ts";
import { expectConfigError, expectConfigRejection } from "../../helpers/config_error.ts";

const goodHash = hashToken("tower_example");

Deno.test("newToken carries at least 256 random bits and never repeats", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const t = newToken();
    assert.match(t, /^tower_[A-Za-z0-9_-]{43}$/);
    const bytes = Buffer.from(t.slice("tower_".length), "base64url");
    assert.ok(bytes.length * 8 >= 256, `${bytes.length * 8} bits`);
    assert.ok(!seen.has(t), "token repeated");
    seen.add(t);
  }
});

Deno.test("hashToken is a stable sha256 that tokenMatches checks", () => {
  const t = newToken();
  const h = hashToken(t);
  assert.match(h, /^sha256:[0-9a-f]{64}$/);
  assert.ok(isTokenHash(h));
  assert.equal(hashToken(t), h);
  assert.notEqual(hashToken(newToken()), h);
  // Known answer: sha256("abc").
  assert.equal(hashToken("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  assert.equal(tokenMatches(t, h), true);
  assert.equal(tokenMatches(t + "x", h), false);
  assert.equal(tokenMatches(newToken(), h), false);
  assert.equal(tokenMatches(t, h.slice(0, -1)), false, "hash one character short");
  assert.equal(tokenMatches(t, h + "0"), false, "hash one character long");
  assert.equal(tokenMatches(t, ""), false, "empty hash");
  assert.equal(tokenMatches(t, h.toUpperCase()), false);
});

Deno.test("FileRegistry: an absent file reads as empty, and updates round-trip", async () => {
  await withScratchDir("registry", async (dir) => {
    const reg = new FileRegistry(join(dir, "registry.yaml"));
    assert.deepEqual(await reg.read(), emptyRegistry());
    const ret = await reg.update((d) => {
      d.settings.publicUrl = "wss://hub.example.com:8443/tunnel";
      d.clusters.push({ name: "prod", tokenHash: goodHash, createdAt: "2024-01-01T00:00:00.000Z" });
      d.clusters.push({
        name: "dev",
        tokenHash: hashToken("other"),
        createdAt: "2024-01-02T00:00:00.000Z",
        tokenRotatedAt: "2024-02-01T00:00:00.000Z",
      });
      return 42;
    });
    assert.equal(ret, 42);
    const back = await new FileRegistry(join(dir, "registry.yaml")).read();
    // Compared against an empty registry's shape, so fields added later (empty here) need no edit.
    assert.deepEqual(back, {
      ...emptyRegistry(),
      settings: { publicUrl: "wss://hub.example.com:8443/tunnel" },
      clusters: [
        { name: "prod", tokenHash: goodHash, createdAt: "2024-01-01T00:00:00.000Z" },
        {
          name: "dev",
          tokenHash: hashToken("other"),
          createdAt: "2024-01-02T00:00:00.000Z",
          tokenRotatedAt: "2024-02-01T00:00:00.000Z",
        },
      ],
    });
    const st = await Deno.stat(reg.path);
    assert.equal(st.mode! & 0o777, 0o600);
  });
});

Deno.test("FileRegistry.update writes atomically: no temp or lock files remain, even after a refused change", async () => {
  await withScratchDir("registry", async (dir) => {
    const reg = new FileRegistry(join(dir, "registry.yaml"));
    for (let i = 0; i < 5; i++) {
      await reg.update((d) => void d.clusters.push({ name: `c${i}`, tokenHash: goodHash, createdAt: "x" }));
    }
    await expectConfigRejection(
      reg.update((d) => void d.clusters.push({ name: "c0", tokenHash: goodHash, createdAt: "x" })),
      "appears twice",
    );
    await assert.rejects(
      reg.update(() => {
        throw new Error("change failed");
      }),
      /change failed/,
    );
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["registry.yaml"]);
    assert.equal((await reg.read()).clusters.length, 5);
  });
});

Deno.test("validateRegistry names what is wrong and where", () => {
  const where = "/etc/tower/registry.yaml";
  const cluster = (over: Record<string, unknown>) => ({ name: "ok", tokenHash: goodHash, ...over });
  assert.deepEqual(validateRegistry(null, where), emptyRegistry());
  assert.deepEqual(validateRegistry(undefined, where), emptyRegistry());

  expectConfigError(
    () => validateRegistry({ clusters: [cluster({ name: "a" }), cluster({ name: "a" })] }, where),
    where,
    "clusters[1].name 'a' appears twice",
  );
  expectConfigError(
    () => validateRegistry({ clusters: [cluster({ name: "A_B" })] }, where),
    where,
    'clusters[0].name "A_B" is not a DNS label',
  );
  expectConfigError(
    () => validateRegistry({ clusters: [cluster({ name: 7 })] }, where),
    "clusters[0].name 7 is not a DNS label",
  );
  expectConfigError(
    () => validateRegistry({ clusters: [cluster({ tokenHash: "md5:abc" })] }, where),
    where,
    "clusters[0].tokenHash of 'ok'",
    "'sha256:' and 64 hex digits",
  );
  expectConfigError(
    () => validateRegistry({ clusters: [cluster({ tokenHash: "tower_plaintext-token" })] }, where),
    "tokenHash",
  );
  expectConfigError(
    () => validateRegistry({ settings: { publicUrl: "https://hub.example.com" } }, where),
    where,
    "settings.publicUrl must be a ws:// or wss:// URL",
  );
  expectConfigError(() => validateRegistry({ settings: { publicUrl: 5 } }, where), "settings.publicUrl");
  for (const notMapping of [[1, 2], "text", 3, true]) {
    expectConfigError(() => validateRegistry(notMapping, where), `${where}: top level must be a mapping`);
  }
  expectConfigError(() => validateRegistry({ clusters: ["x"] }, where), "clusters[0] must be a mapping");
  expectConfigError(() => validateRegistry({ clusters: { a: 1 } }, where), "clusters must be a list");
  expectConfigError(() => validateRegistry({ settings: [] }, where), "settings must be a mapping");
  expectConfigError(() => validateRegistry({ version: 2 }, where), "unsupported version 2");
  const user = (extra: unknown) => ({ users: [{ name: "u", groups: [], extra }] });
  assert.deepEqual(validateRegistry(user({ "example.com/site": ["a b"] }), where).users[0]?.extra, {
    "example.com/site": ["a b"],
  });
  expectConfigError(() => validateRegistry(user({ Team: ["x"] }), where), "users[0].extra of 'u'", "'Team'");
  expectConfigError(() => validateRegistry(user({ team: "x" }), where), "extra 'team' must be a list");
  expectConfigError(() => validateRegistry(user({ team: ["a\nb"] }), where), "printable ASCII");
  expectConfigError(() => validateRegistry(user(["x"]), where), "extras must map keys");
});

Deno.test("FileRegistry.read: invalid YAML and invalid content are ConfigErrors naming the file", async () => {
  await withScratchDir("registry", async (dir) => {
    const path = join(dir, "registry.yaml");
    const reg = new FileRegistry(path);
    await Deno.writeTextFile(path, "clusters: [\n  - name: a\n  bad: : :\n");
    await expectConfigRejection(reg.read(), `${path}: not valid YAML`);
    await Deno.writeTextFile(path, YAML.stringify({ clusters: [{ name: "A_B", tokenHash: goodHash }] }));
    await expectConfigRejection(reg.read(), `${path}: `, "DNS label");
  });
});

Deno.test("FileRegistry.update: concurrent writers all land (the lock serializes them)", async () => {
  await withScratchDir("registry", async (dir) => {
    const path = join(dir, "registry.yaml");
    // Separate instances, as separate admin processes would be: only the lock file joins them.
    const writers = Array.from({ length: 12 }, (_, i) =>
      new FileRegistry(path).update((d) => {
        d.clusters.push({ name: `c${i}`, tokenHash: hashToken(`t${i}`), createdAt: "now" });
        return i;
      }));
    assert.deepEqual(await Promise.all(writers), [...Array(12).keys()]);
    const data = await new FileRegistry(path).read();
    assert.deepEqual(
      data.clusters.map((c) => c.name).sort(),
      [...Array(12).keys()].map((i) => `c${i}`).sort(),
    );
    const left = [];
    for await (const e of Deno.readDir(dir)) left.push(e.name);
    assert.deepEqual(left, ["registry.yaml"]);
  });
});

Deno.test("FileRegistry.watch reports the current contents, then a change made by another writer", async () => {
  await withScratchDir("registry", async (dir) => {
    const path = join(dir, "registry.yaml");
    await new FileRegistry(path).update((d) =>
      void d.clusters.push({ name: "a", tokenHash: goodHash, createdAt: "x" })
    );
    const seen: RegistryData[] = [];
    let notify = () => {};
    const watcher = new FileRegistry(path);
    const stop = watcher.watch((d) => {
      seen.push(d);
      notify();
    }, 50);
    const until = (pred: () => boolean, what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${what} within 5 s: ${JSON.stringify(seen)}`)),
          5000,
        );
        notify = () => {
          if (pred()) {
            clearTimeout(timer);
            resolve();
          }
        };
        notify();
      });
    try {
      await until(() => seen.length >= 1, "first report");
      assert.deepEqual(seen[0]!.clusters.map((c) => c.name), ["a"]);
      await new FileRegistry(path).update((d) => {
        d.clusters.push({ name: "b", tokenHash: goodHash, createdAt: "x" });
      });
      await until(() => seen.some((d) => d.clusters.some((c) => c.name === "b")), "report of 'b'");
      assert.deepEqual(seen.at(-1)!.clusters.map((c) => c.name), ["a", "b"]);
    } finally {
      await stop(); // settles once an in-flight read has finished, so no file op outlives the test
    }
  });
});

Deno.test("certificate epochs: 12 hex digits, positive serial prefix; a user's epoch is validated and kept", () => {
  for (let i = 0; i < 200; i++) {
    const e = newCertEpoch();
    assert.ok(isCertEpoch(e), e);
  }
  assert.ok(serialInEpoch("1A2B3C4D5E6F7419DBC8100988F919CD", "1a2b3c4d5e6f"));
  assert.ok(serialInEpoch("1A:2B:3C:4D:5E:6F:74:19", "1a2b3c4d5e6f"));
  assert.ok(!serialInEpoch("2A2B3C4D5E6F7419DBC8100988F919CD", "1a2b3c4d5e6f"));
  assert.ok(serialInEpoch("anything", undefined), "records from before epochs check names only");
  const where = "/etc/tower/registry.yaml";
  const read = validateRegistry({ users: [{ name: "u", groups: [], certEpoch: "1a2b3c4d5e6f" }] }, where);
  assert.equal(read.users[0]!.certEpoch, "1a2b3c4d5e6f");
  for (const bad of ["0a2b3c4d5e6f", "1A2B3C4D5E6F", "1a2b", 12]) {
    expectConfigError(
      () => validateRegistry({ users: [{ name: "u", groups: [], certEpoch: bad }] }, where),
      "users[0].certEpoch of 'u' must be 12 hex digits",
    );
  }
});
