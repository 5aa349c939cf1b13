/**
 * Join tokens: 256 random bits from the platform CSPRNG, shown once, stored only as a SHA-256 hash.
 * A fast hash is enough because the input has full entropy; comparison is constant-time.
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";

const prefix = "tower_";

/** A new random token (`tower_` + 43 base64url characters = 256 bits). */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return prefix + Buffer.from(bytes).toString("base64url");
}

/** The stored form of a token: `sha256:` + hex digest. */
export function hashToken(token: string): string {
  return "sha256:" + createHash("sha256").update(token, "utf8").digest("hex");
}

/** A hash no token produces, compared against for unknown names so every check costs the same. */
export const decoyHash: string = hashToken(newToken());

/** True when `token` hashes to `storedHash`; always does the same work whatever the inputs. */
export function tokenMatches(token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token));
  const b = Buffer.from(storedHash.length === a.length ? storedHash : decoyHash);
  return timingSafeEqual(a, b) && storedHash.length === a.length;
}

/** True when `text` looks like a stored token hash. */
export function isTokenHash(text: string): boolean {
  return /^sha256:[0-9a-f]{64}$/.test(text);
}
