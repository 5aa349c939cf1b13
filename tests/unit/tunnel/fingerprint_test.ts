/** SSH host key fingerprints: the same text OpenSSH prints, and what a bad one is told. @module */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { expectConfigError } from "../../helpers/config_error.ts";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { checkFingerprint, fingerprintOfBlob, fingerprintOfKey } from "../../../lib/tunnel/fingerprint.ts";

/** An ed25519 pair ssh2 can read back (it writes an unreadable one ~3 times in 1,000; see newHostKey). */
function parseableKeyPair(): { private: string; public: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync("ed25519");
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error)) return pair;
  }
}

Deno.test("fingerprintOfKey matches OpenSSH's SHA256 of the public key blob, for private and public text", async () => {
  const pair = parseableKeyPair();
  const fromPrivate = fingerprintOfKey(pair.private);
  const fromPublic = fingerprintOfKey(pair.public);
  assert.equal(fromPrivate, fromPublic);
  assert.match(fromPrivate, /^SHA256:[A-Za-z0-9+/]{43}$/);
  // Independently: the base64 field of the public line is the blob.
  const blob = Buffer.from(pair.public.trim().split(/\s+/)[1]!, "base64");
  const expected = "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
  assert.equal(fromPrivate, expected);
  assert.equal(fingerprintOfBlob(blob), expected);
  assert.equal(checkFingerprint(fromPrivate), fromPrivate);
  // And as ssh-keygen itself prints it.
  const keygen = await new Deno.Command("ssh-keygen", {
    args: ["-l", "-E", "sha256", "-f", "/dev/stdin"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = keygen.stdin.getWriter();
  await w.write(new TextEncoder().encode(pair.public + "\n"));
  await w.close();
  const out = await keygen.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).split(/\s+/)[1], fromPrivate);
  assert.notEqual(fingerprintOfKey(parseableKeyPair().private), fromPrivate);
});

Deno.test("fingerprintOfKey refuses text that is not a key", () => {
  assert.throws(() => fingerprintOfKey("not a key"));
});

Deno.test("checkFingerprint refuses anything but SHA256: and 43 base64 characters, saying where to get one", () => {
  const good = "SHA256:" + "A".repeat(43);
  assert.equal(checkFingerprint(good), good);
  for (
    const bad of [
      "",
      "SHA256:abc",
      good + "=",
      good + "A",
      "sha256:" + "A".repeat(43),
      "MD5:aa:bb",
      "A".repeat(50),
      "SHA256:" + "-".repeat(43),
    ]
  ) {
    expectConfigError(() => checkFingerprint(bad), `'${bad}'`, "main_server.ts fingerprint");
  }
});
