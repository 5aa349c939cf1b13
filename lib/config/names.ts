/** Validation of names users type: cluster names, endpoint names, replica identities. @module */

import { ConfigError } from "./duration.ts";

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** True when `name` is an RFC 1123 DNS label (what Tower accepts as a cluster name). */
export function isClusterName(name: string): boolean {
  return dnsLabel.test(name);
}

/** Throws a ConfigError unless `name` is a valid cluster name. */
export function checkClusterName(name: string): string {
  if (!isClusterName(name)) {
    throw new ConfigError(
      `cluster name '${name}' is not a DNS label (lowercase letters, digits and '-', 1-63 characters, ` +
        `starting and ending with a letter or digit)`,
    );
  }
  return name;
}

/** True when `id` can name a hub replica: a DNS label, as a pod name is. */
export function isReplicaId(id: unknown): id is string {
  return typeof id === "string" && dnsLabel.test(id);
}

/**
 * A replica identity for this process: the host name (a pod's name) cut to fit, and a random suffix so
 * that a restarted replica, or several on one host, never pass for one another.
 */
export function newReplicaId(host: string): string {
  const base = host.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 54)
    .replace(/-+$/, "");
  const suffix = crypto.randomUUID().replaceAll("-", "").slice(0, 8);
  return base ? `${base}-${suffix}` : `hub-${suffix}`;
}

const endpointName = /^[a-z0-9]([-a-z0-9./:]{0,250}[a-z0-9])?$/;

/**
 * True when `name` can name a published endpoint: `kubernetes`, `svc/NS/NAME:PORT`, `svc/NS/NAME:PORT/udp`,
 * or any other lowercase name made of letters, digits, `-`, `.`, `/` and `:` with no `..` segment.
 */
export function isEndpointName(name: string): boolean {
  return endpointName.test(name) && !name.split("/").some((part) => part === "." || part === "..");
}
