/**
 * The hub's per-installation PKI: an ECDSA P-256 CA and a serving certificate signed by it, generated
 * into the data dir on first start (never shipped, never committed). A user-supplied cert/key replaces
 * the serving pair. The CA also signs user client certificates.
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";

const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const day = 86_400_000;

/** A certificate and its private key, both PEM. */
export interface CertPair {
  cert: string;
  key: string;
}

/** 16 random bytes as hex, positive; `prefix` (hex, itself positive) replaces its first digits. */
function serial(prefix = ""): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return prefix + hex.slice(prefix.length);
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

async function importKey(pem: string): Promise<CryptoKey> {
  return await crypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(pem), alg, false, ["sign"]);
}

/** A new self-signed CA valid for ten years. */
export async function createCa(commonName: string): Promise<CertPair> {
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore: new Date(Date.now() - day),
    notAfter: new Date(Date.now() + 3650 * day),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await exportKey(keys.privateKey) };
}

/** What a leaf certificate is for. */
export interface LeafRequest {
  commonName: string;
  /** Organizations (Kubernetes reads them as groups on client certs). */
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  /** `peer`: a hub replica's certificate on the peer link, for both ends (server and client auth). */
  usage: "server" | "client" | "peer";
  /** How long it is valid from now, in milliseconds. */
  validMs: number; /** Hex digits the serial number starts with (a user's certificate epoch). */
  serialPrefix?: string;
}

/** The DNS names (lower case) and IP addresses (IPv6 in shortest form) a certificate's SAN names. */
export function certNames(pem: string): string[] {
  const san = new x509.X509Certificate(pem).getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).flatMap((n) => {
    if (n.type === "dns") return [n.value.toLowerCase()];
    if (n.type !== "ip") return [];
    return [n.value.includes(":") ? new URL(`http://[${n.value}]`).hostname.slice(1, -1) : n.value];
  });
}

/** A new leaf certificate signed by `ca`. */
export async function issueLeaf(ca: CertPair, req: LeafRequest): Promise<CertPair> {
  const caCert = new x509.X509Certificate(ca.cert);
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const esc = (v: string) => v.replace(/([,+"\\<>;=])/g, "\\$1");
  const subject = [`CN=${esc(req.commonName)}`, ...(req.organizations ?? []).map((o) => `O=${esc(o)}`)].join(
    ", ",
  );
  const names = [
    ...(req.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(req.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(req.serialPrefix),
    subject,
    issuer: caCert.subject,
    // Servers are backdated a day for agents with slow clocks; short-lived client certificates five minutes.
    notBefore: new Date(Date.now() - (req.usage === "client" ? 5 * 60_000 : day)),
    notAfter: new Date(Date.now() + req.validMs),
    publicKey: keys.publicKey,
    signingKey: await importKey(ca.key),
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        req.usage === "peer"
          ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
          : [req.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
      ),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
    ],
  });
  return { cert: cert.toString("pem"), key: await exportKey(keys.privateKey) };
}
