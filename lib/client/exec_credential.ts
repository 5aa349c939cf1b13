/**
 * The answer of a kubectl exec credential plugin: a `client.authentication.k8s.io/v1` ExecCredential
 * with a bearer token and when it expires, so kubectl reuses it until then and runs the plugin again after.
 * @module
 */

/** The ExecCredential JSON for `token`, valid until `expiresAt` (ms since the epoch). */
export function execCredential(token: string, expiresAt: number): string {
  return JSON.stringify({
    apiVersion: "client.authentication.k8s.io/v1",
    kind: "ExecCredential",
    status: { token, expirationTimestamp: new Date(expiresAt).toISOString().replace(/\.\d{3}Z$/, "Z") },
  });
}
