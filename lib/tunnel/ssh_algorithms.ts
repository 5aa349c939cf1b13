/**
 * SSH algorithm preferences shared by the hub and the agent.
 *
 * chacha20-poly1305 goes first: in Deno, node:crypto AES runs several times slower than in Node while
 * chacha20 is close to native speed (see BENCHMARKS.md for the numbers measured on this code).
 * @module
 */

// @ts-types="@types/ssh2"
import type ssh2 from "ssh2";

/** Cipher order offered by both sides, fastest in Deno first. */
export const cipherOrder = [
  "chacha20-poly1305@openssh.com",
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes256-ctr",
] as const satisfies readonly ssh2.CipherAlgorithm[];

/** Algorithm block for ssh2's `algorithms` option. */
export function sshAlgorithms(cipher: readonly ssh2.CipherAlgorithm[] = cipherOrder): ssh2.Algorithms {
  return {
    cipher: [...cipher],
    kex: ["curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"],
    serverHostKey: ["ssh-ed25519"],
  };
}
