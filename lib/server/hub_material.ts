/**
 * What makes a hub installation recognisable: its SSH host key (agents pin its fingerprint), its CA
 * (agents and kubeconfigs trust it), its peer CA (replica certificates) and its serving certificate.
 * Generated on first use and kept in a {@linkcode HubMaterial} store: files in the data dir
 * ({@linkcode DataDir} in data_dir.ts), or Secrets in the host cluster (secret_material.ts) so that every
 * replica presents the same fingerprint and CA.
 * @module
 */

import type { CertPair } from "./tls_material.ts";

/** Where hub material is kept. */
export interface HubMaterial {
  /** Where the CA certificate can be found, for people (a file path, or a Secret). */
  caLocation: string;
  /** The SSH host key (OpenSSH private key text) and its fingerprint, created on first use. */
  hostKey(): Promise<{ key: string; fingerprint: string }>;
  /** The hub CA, created on first use. */
  ca(): Promise<CertPair>;
  /** The peer CA (replica certificates only), created on first use. */
  peerCa(): Promise<CertPair>;
  /**
   * The serving certificate: user-supplied files, or one from the hub CA created on first use and
   * issued again when it lacks one of `extraNames`.
   */
  servingCert(
    ca: CertPair,
    extraNames: string[],
    supplied?: { certFile: string; keyFile: string },
  ): Promise<CertPair>;
}
