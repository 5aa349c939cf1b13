/**
 * The hub's data dir, as one object ({@link DataDir}) opened once and passed down: its paths, the
 * registry file, and the hub material kept in it (host key, CA, peer CA, serving certificate). Everything
 * secret is created here on first start with mode 0600 and loaded from here afterwards.
 * @module
 */

import { join } from "node:path";
import { hostname } from "node:os";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import net from "node:net";
import { certNames, type CertPair, createCa, issueLeaf } from "./tls_material.ts";
import { ConfigError } from "../config/mod.ts";
import { FileRegistry } from "../registry/mod.ts";
import { fingerprintOfKey } from "../tunnel/mod.ts";
import type { HubMaterial } from "./hub_material.ts";

/** Paths inside a data dir. */
export function dataPaths(dir: string): {
  registry: string;
  hostKey: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  peerCaCert: string;
  peerCaKey: string;
  /** Each replica's admin socket, `REPLICA.sock` (replicas may share a data dir). */
  adminSockets: string;
  /** Replica leases as files, for replicas sharing the data dir (the file registry). */
  replicas: string;
} {
  return {
    registry: join(dir, "registry.yaml"),
    hostKey: join(dir, "ssh_host_ed25519_key"),
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    peerCaCert: join(dir, "peer-ca.crt"),
    peerCaKey: join(dir, "peer-ca.key"),
    adminSockets: join(dir, "admin"),
    replicas: join(dir, "replicas"),
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

/**
 * A CA kept as `certPath` and `keyPath`, created on first use. Half a CA is refused: a new one would
 * silently break everything the old one signed or pinned.
 */
async function loadOrCreateCa(
  dir: string,
  certPath: string,
  keyPath: string,
  name: string,
): Promise<CertPair> {
  const [cert, key] = [await readIfExists(certPath), await readIfExists(keyPath)];
  if (cert && key) return { cert, key };
  if (cert || key) {
    const [have, missing] = cert ? [certPath, keyPath] : [keyPath, certPath];
    throw new ConfigError(
      `${missing} is missing but ${have} exists: restore ${missing} from a backup (a new CA would break ` +
        `everything the old one signed: agents' CA files, kubeconfigs, peer certificates), or remove ${have} ` +
        `too to start over with a new CA`,
    );
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = await createCa(`${name} (${hostname()})`);
  await writeSecret(keyPath, ca.key);
  await writeSecret(certPath, ca.cert);
  return ca;
}

function servingNames(extraNames: string[], withHost = true): { dnsNames: string[]; ipAddresses: string[] } {
  const names = [...new Set(["localhost", ...(withHost ? [hostname()] : []), ...extraNames])];
  return {
    dnsNames: names.filter((n) => !net.isIP(n)),
    ipAddresses: [...new Set(["127.0.0.1", "::1", ...names.filter((n) => net.isIP(n))])],
  };
}

/**
 * True when serving certificate `cert` names every address a hub with `extraNames` answers on (and this
 * host's name unless `withHost` is false: replicas sharing one certificate each have their own).
 */
export function servingCertNames(cert: string, extraNames: string[], withHost = true): boolean {
  const { dnsNames, ipAddresses } = servingNames(extraNames, withHost);
  const has = new Set(certNames(cert));
  return [...dnsNames, ...ipAddresses].every((n) => has.has(canonicalName(n)));
}

/** A new serving certificate from the hub CA for localhost, the host name and `extraNames`. */
export function issueServingCert(ca: CertPair, extraNames: string[]): Promise<CertPair> {
  return issueLeaf(ca, {
    commonName: "tower-hub",
    ...servingNames(extraNames),
    usage: "server",
    validMs: 825 * 86_400_000,
  });
}

/** A host name or address as certNames spells it: lower case, IPv6 in its shortest form. */
function canonicalName(name: string): string {
  return net.isIPv6(name) ? new URL(`http://[${name}]`).hostname.slice(1, -1) : name.toLowerCase();
}

/** A hub's data dir: where its registry file and hub material live. Nothing is read until asked for. */
export class DataDir implements HubMaterial {
  /** Every path in it. */
  readonly paths: ReturnType<typeof dataPaths>;

  constructor(readonly dir: string) {
    this.paths = dataPaths(dir);
  }

  get caLocation(): string {
    return this.paths.caCert;
  }

  /** Creates the data dir if needed and opens its registry file. */
  async registry(): Promise<FileRegistry> {
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
    return new FileRegistry(this.paths.registry);
  }

  /** The hub's host key (OpenSSH private key text), created on first use. */
  async hostKey(): Promise<{ key: string; fingerprint: string }> {
    let key = await readIfExists(this.paths.hostKey);
    if (!key) {
      await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
      key = newHostKey();
      await writeSecret(this.paths.hostKey, key);
    }
    return { key, fingerprint: fingerprintOfKey(key) };
  }

  /** The hub CA (agents' CA file, user client certificates), created on first use. */
  ca(): Promise<CertPair> {
    return loadOrCreateCa(this.dir, this.paths.caCert, this.paths.caKey, "Tower hub CA");
  }

  /**
   * The peer CA, created on first use: it signs only hub replicas' certificates for the peer link, never
   * a user's, so no credential a user can obtain is accepted there.
   */
  peerCa(): Promise<CertPair> {
    return loadOrCreateCa(this.dir, this.paths.peerCaCert, this.paths.peerCaKey, "Tower peer CA");
  }

  /**
   * The serving certificate: user-supplied files, or one from the hub CA created on first use and issued
   * again when it does not name every address asked for (`--name` values added later).
   */
  async servingCert(
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
    const p = this.paths;
    const [cert, key] = [await readIfExists(p.serverCert), await readIfExists(p.serverKey)];
    if (cert && key && servingCertNames(cert, extraNames)) return { cert, key };
    const leaf = await issueServingCert(ca, extraNames);
    await writeSecret(p.serverKey, leaf.key);
    await writeSecret(p.serverCert, leaf.cert);
    return leaf;
  }
}
