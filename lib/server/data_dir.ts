/**
 * The hub's data dir: registry, host key, CA and serving certificate, live status. Everything secret is
 * created here on first start with mode 0600 and loaded from here afterwards.
 * @module
 */

import { join } from "node:path";
import { hostname } from "node:os";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { type CertPair, createCa, issueLeaf } from "./tls_material.ts";
import { FileRegistry } from "../registry/mod.ts";
import { fingerprintOfKey } from "../tunnel/mod.ts";

/** Paths inside a data dir. */
export function dataPaths(dir: string): {
  registry: string;
  hostKey: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  status: string;
  peerCaCert: string;
  peerCaKey: string;
} {
  return {
    registry: join(dir, "registry.yaml"),
    hostKey: join(dir, "ssh_host_ed25519_key"),
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    status: join(dir, "status.json"),
    peerCaCert: join(dir, "peer-ca.crt"),
    peerCaKey: join(dir, "peer-ca.key"),
  };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

async function writeSecret(path: string, text: string): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/**
 * A new ed25519 host key in OpenSSH text form. ssh2 1.17 writes a key its own parser rejects
 * ("Malformed OpenSSH private key") about 3 times in 1,000 (measured here: 8 of 3,000), so a key is
 * only kept once it parses.
 */
export function newHostKey(): string {
  for (;;) {
    const key = ssh2.utils.generateKeyPairSync("ed25519").private;
    if (!(ssh2.utils.parseKey(key) instanceof Error)) return key;
  }
}

/** The hub's host key (OpenSSH private key text), created on first use. */
export async function loadHostKey(dir: string): Promise<{ key: string; fingerprint: string }> {
  const path = dataPaths(dir).hostKey;
  let key = await readIfExists(path);
  if (!key) {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    key = newHostKey();
    await writeSecret(path, key);
  }
  return { key, fingerprint: fingerprintOfKey(key) };
}

/** The hub CA, created on first use. */
export async function loadCa(dir: string): Promise<CertPair> {
  const p = dataPaths(dir);
  const [cert, key] = [await readIfExists(p.caCert), await readIfExists(p.caKey)];
  if (cert && key) return { cert, key };
  const ca = await createCa(`Tower hub CA (${hostname()})`);
  await writeSecret(p.caKey, ca.key);
  await writeSecret(p.caCert, ca.cert);
  return ca;
}

/**
 * The peer CA, created on first use: it signs only hub replicas' certificates for the peer link, never a
 * user's, so no credential a user can obtain is accepted there.
 */
export async function loadPeerCa(dir: string): Promise<CertPair> {
  const p = dataPaths(dir);
  const [cert, key] = [await readIfExists(p.peerCaCert), await readIfExists(p.peerCaKey)];
  if (cert && key) return { cert, key };
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = await createCa(`Tower peer CA (${hostname()})`);
  await writeSecret(p.peerCaKey, ca.key);
  await writeSecret(p.peerCaCert, ca.cert);
  return ca;
}

/** The serving certificate: user-supplied files, or one from the hub CA created on first use. */
export async function loadServingCert(
  dir: string,
  ca: CertPair,
  extraNames: string[],
  supplied?: { certFile: string; keyFile: string },
): Promise<CertPair> {
  if (supplied) {
    return {
      cert: await Deno.readTextFile(supplied.certFile),
      key: await Deno.readTextFile(supplied.keyFile),
    };
  }
  const p = dataPaths(dir);
  const [cert, key] = [await readIfExists(p.serverCert), await readIfExists(p.serverKey)];
  if (cert && key) return { cert, key };
  const ipish = (n: string) => /^[\d.]+$/.test(n) || n.includes(":");
  const names = [...new Set(["localhost", hostname(), ...extraNames])];
  const leaf = await issueLeaf(ca, {
    commonName: "tower-hub",
    dnsNames: names.filter((n) => !ipish(n)),
    ipAddresses: [...new Set(["127.0.0.1", "::1", ...names.filter(ipish)])],
    usage: "server",
    validMs: 825 * 86_400_000,
  });
  await writeSecret(p.serverKey, leaf.key);
  await writeSecret(p.serverCert, leaf.cert);
  return leaf;
}

/** Creates the data dir if needed and opens its registry. */
export async function openDataDir(dir: string): Promise<FileRegistry> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  return new FileRegistry(dataPaths(dir).registry);
}
