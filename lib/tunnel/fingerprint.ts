/** OpenSSH-style host key fingerprints (`SHA256:` + unpadded base64 of the key blob's SHA-256). @module */

import { createHash } from "node:crypto";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { ConfigError } from "../config/mod.ts";

/** Fingerprint of an SSH public key given as its wire blob. */
export function fingerprintOfBlob(blob: Uint8Array): string {
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/** Fingerprint of a key given in OpenSSH text form (private or public). */
export function fingerprintOfKey(keyText: string): string {
  const parsed = ssh2.utils.parseKey(keyText);
  if (parsed instanceof Error) throw parsed;
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key) throw new Error("no key found");
  return fingerprintOfBlob(key.getPublicSSH());
}

const shape = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** Validates a fingerprint a person typed; returns it unchanged or throws a ConfigError. */
export function checkFingerprint(text: string): string {
  if (!shape.test(text)) {
    throw new ConfigError(
      `hub fingerprint '${text}' is not an OpenSSH SHA256 fingerprint ` +
        `(expected 'SHA256:' and 43 base64 characters, as printed by 'main_server.ts fingerprint')`,
    );
  }
  return text;
}
