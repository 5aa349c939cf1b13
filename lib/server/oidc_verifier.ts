/**
 * OpenID Connect ID tokens as hub credentials, with kube-apiserver's meaning of its `--oidc-*` flags.
 * For each trusted issuer the hub reads the discovery document once, keeps the issuer's JWKS (refetched
 * when a token names a key it has not seen, at most once a second, and every ten minutes), and checks a
 * bearer token's signature, `iss`, `aud` (the client ID), `exp` and `nbf` (with a small skew), then maps
 * the username and groups claims to a hub identity.
 *
 * `npm:jose` does the JOSE work (signature algorithms, JWKS caching with a cooldown, claim checks):
 * the hub only verifies tokens, so it needs a JWT/JWKS library, not an OAuth client.
 * @module
 */

import { createRemoteJWKSet, customFetch, decodeJwt, type JWTPayload, jwtVerify } from "jose";
import { ConfigError } from "../config/mod.ts";
import type { Logger } from "../log/log.ts";

/** One trusted issuer, as the `serve --oidc-*` flags describe it. */
export interface OidcIssuerConfig {
  /** The issuer URL; must be `https://` and equal the tokens' `iss`. */
  issuer: string;
  /** The audience tokens must carry (the OAuth client ID users log in with). */
  clientId: string;
  /** PEM of the CA that signed the issuer's serving certificate, when not a public one. */
  caPem?: string;
  /** Claim that names the user (default `email`). */
  usernameClaim: string;
  /** Claim that lists the user's groups (default `groups`). */
  groupsClaim: string;
  /** Prefix for user names; kube-apiserver's default: none for `email`, else `ISSUER#`; `-` means none. */
  usernamePrefix?: string;
  /** Prefix for group names (default none). */
  groupsPrefix?: string;
}

/** Longest bearer token the hub tries to verify. */
export const maxTokenLength = 8192;
/** Most groups one token may carry. */
export const maxGroups = 256;
/** Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. */
export const clockSkewSeconds = 5;

/** The outcome of verifying a token. */
export type OidcResult =
  | { ok: true; user: string; groups: string[]; issuer: string }
  | { ok: false; reason: string; issuer?: string };

type KeySet = ReturnType<typeof createRemoteJWKSet>;

interface IssuerState {
  config: OidcIssuerConfig;
  fetch: typeof fetch;
  keys?: KeySet;
  /** When discovery last failed (ms), so a down issuer is asked at most every few seconds. */
  failedAt?: number;
  discovering?: Promise<KeySet>;
}

/** Verifies ID tokens from a fixed set of issuers. */
export class OidcVerifier {
  readonly #issuers = new Map<string, IssuerState>();
  readonly #log: Logger;

  constructor(configs: OidcIssuerConfig[], log: Logger) {
    this.#log = log;
    for (const config of configs) {
      const client = config.caPem ? Deno.createHttpClient({ caCerts: [config.caPem] }) : undefined;
      const fetchVia: typeof fetch = client
        ? (input, init) => fetch(input, { ...init, client })
        : (input, init) => fetch(input, init);
      this.#issuers.set(config.issuer, { config, fetch: fetchVia });
    }
  }

  /** The configured issuers' URLs. */
  get issuers(): string[] {
    return [...this.#issuers.keys()];
  }

  /** True when `token` looks like a JWT (three base64url parts), so it is for this verifier to judge. */
  static looksLikeJwt(token: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
  }

  /** Checks `token` and returns the identity it proves, or why not (never containing the token). */
  async verify(token: string): Promise<OidcResult> {
    if (token.length > maxTokenLength) {
      return { ok: false, reason: `token is longer than ${maxTokenLength} characters` };
    }
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      return { ok: false, reason: "token is not a JWT" };
    }
    const state = typeof unverified.iss === "string" ? this.#issuers.get(unverified.iss) : undefined;
    if (!state) {
      return {
        ok: false,
        reason: `token issuer ${JSON.stringify(unverified.iss ?? "")} is not trusted by this hub`,
      };
    }
    const { config } = state;
    const issuer = config.issuer;
    let keys: KeySet;
    try {
      keys = await this.#keysOf(state);
    } catch (e) {
      return {
        ok: false,
        issuer,
        reason: `identity provider ${issuer} is unavailable: ${(e as Error).message}`,
      };
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer,
        audience: config.clientId,
        clockTolerance: clockSkewSeconds,
        requiredClaims: ["exp"],
        algorithms: [
          "RS256",
          "RS384",
          "RS512",
          "PS256",
          "PS384",
          "PS512",
          "ES256",
          "ES384",
          "ES512",
          "EdDSA",
        ],
      }));
    } catch (e) {
      return { ok: false, issuer, reason: refusalReason(e, unverified, config) };
    }
    return claimsToIdentity(payload, config);
  }

  /** The issuer's key set, after discovery (once; retried at most every 5 s while it fails). */
  #keysOf(state: IssuerState): Promise<KeySet> {
    if (state.keys) return Promise.resolve(state.keys);
    if (state.discovering) return state.discovering;
    if (state.failedAt !== undefined && Date.now() - state.failedAt < 5000) {
      return Promise.reject(new Error("discovery failed moments ago"));
    }
    const issuer = state.config.issuer;
    state.discovering = (async () => {
      const url = issuer.replace(/\/$/, "") + "/.well-known/openid-configuration";
      const res = await state.fetch(url, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`discovery answered ${res.status}`);
      }
      const doc = await res.json() as { issuer?: unknown; jwks_uri?: unknown };
      if (doc.issuer !== issuer) {
        throw new Error(`discovery names issuer ${JSON.stringify(doc.issuer)}, not ${issuer}`);
      }
      if (typeof doc.jwks_uri !== "string" || !doc.jwks_uri.startsWith("https://")) {
        throw new Error("discovery has no https jwks_uri");
      }
      const log = this.#log;
      const keys = createRemoteJWKSet(new URL(doc.jwks_uri), {
        cooldownDuration: 1000,
        cacheMaxAge: 600_000,
        timeoutDuration: 5000,
        [customFetch]: async (input: string | URL | Request, init?: RequestInit) => {
          const r = await state.fetch(input, init);
          log.info("oidc keys fetched", { issuer, status: r.status });
          return r;
        },
      });
      state.keys = keys;
      this.#log.info("oidc issuer discovered", { issuer, jwksUri: doc.jwks_uri });
      return keys;
    })().catch((e) => {
      state.failedAt = Date.now();
      this.#log.warn("oidc discovery failed", { issuer, error: (e as Error).message });
      throw e;
    }).finally(() => {
      state.discovering = undefined;
    });
    return state.discovering;
  }
}

/** A person-readable reason for a failed verification, from jose's error codes. */
function refusalReason(e: unknown, unverified: JWTPayload, config: OidcIssuerConfig): string {
  const code = (e as { code?: string }).code;
  const claim = (e as { claim?: string }).claim;
  switch (code) {
    case "ERR_JWT_EXPIRED":
      return `token expired at ${new Date(Number(unverified.exp) * 1000).toISOString()}; log in again`;
    case "ERR_JWKS_NO_MATCHING_KEY":
      return `token is signed by a key ${config.issuer} does not publish (rotated out?)`;
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "token signature is not valid";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return "token signature algorithm is not allowed";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (claim === "aud") return `token audience is not this hub's client ID '${config.clientId}'`;
      if (claim === "nbf") return "token is not valid yet";
      return `token claim '${claim}' is not valid: ${(e as Error).message}`;
    default:
      return `token is not valid: ${(e as Error).message}`;
  }
}

/** Maps verified claims to a user name and groups with kube-apiserver's rules, or refuses. */
export function claimsToIdentity(payload: JWTPayload, config: OidcIssuerConfig): OidcResult {
  const issuer = config.issuer;
  const name = payload[config.usernameClaim];
  if (typeof name !== "string" || name === "") {
    return { ok: false, issuer, reason: `token has no '${config.usernameClaim}' claim to name the user` };
  }
  if (config.usernameClaim === "email" && payload.email_verified === false) {
    return { ok: false, issuer, reason: "token's email is not verified" };
  }
  const prefix = config.usernamePrefix === "-"
    ? ""
    : config.usernamePrefix ?? (config.usernameClaim === "email" ? "" : `${issuer}#`);
  const raw = payload[config.groupsClaim];
  const groups = raw === undefined ? [] : typeof raw === "string" ? [raw] : raw;
  if (!Array.isArray(groups) || groups.some((g) => typeof g !== "string")) {
    return { ok: false, issuer, reason: `token's '${config.groupsClaim}' claim is not a list of strings` };
  }
  if (groups.length > maxGroups) {
    return { ok: false, issuer, reason: `token carries ${groups.length} groups; at most ${maxGroups}` };
  }
  const gp = config.groupsPrefix ?? "";
  return { ok: true, issuer, user: prefix + name, groups: (groups as string[]).map((g) => gp + g) };
}

/**
 * Builds issuer configs from `serve` flags. Each `--oidc-*` flag other than `--oidc-issuer` is given once
 * (applies to every issuer) or once per issuer, in the order of the issuers.
 */
export function oidcConfigs(flags: {
  issuers: string[];
  clientIds: string[];
  caPems: string[];
  usernameClaims: string[];
  groupsClaims: string[];
  usernamePrefixes: string[];
  groupsPrefixes: string[];
}): OidcIssuerConfig[] {
  const n = flags.issuers.length;
  const pick = (values: string[], flag: string, i: number): string | undefined => {
    if (values.length === 0) return undefined;
    if (values.length === 1) return values[0];
    if (values.length !== n) {
      throw new ConfigError(
        `--${flag} is given ${values.length} times for ${n} issuers; give it once or once per issuer`,
      );
    }
    return values[i];
  };
  if (n === 0) {
    const stray = Object.entries(flags).find(([k, v]) => k !== "issuers" && v.length);
    if (stray) throw new ConfigError("--oidc-* flags need --oidc-issuer URL");
    return [];
  }
  if (new Set(flags.issuers).size !== n) throw new ConfigError("an --oidc-issuer is given twice");
  return flags.issuers.map((issuer, i) => {
    let url: URL;
    try {
      url = new URL(issuer);
    } catch {
      throw new ConfigError(`--oidc-issuer '${issuer}' is not a URL`);
    }
    if (url.protocol !== "https:") throw new ConfigError(`--oidc-issuer '${issuer}' must be an https:// URL`);
    if (url.search || url.hash) {
      throw new ConfigError(`--oidc-issuer '${issuer}' may not have a query or fragment`);
    }
    const clientId = pick(flags.clientIds, "oidc-client-id", i);
    if (!clientId) throw new ConfigError(`--oidc-issuer ${issuer} needs --oidc-client-id`);
    const caPem = pick(flags.caPems, "oidc-ca-file", i);
    const usernamePrefix = pick(flags.usernamePrefixes, "oidc-username-prefix", i);
    const groupsPrefix = pick(flags.groupsPrefixes, "oidc-groups-prefix", i);
    return {
      issuer,
      clientId,
      usernameClaim: pick(flags.usernameClaims, "oidc-username-claim", i) ?? "email",
      groupsClaim: pick(flags.groupsClaims, "oidc-groups-claim", i) ?? "groups",
      ...(caPem ? { caPem } : {}),
      ...(usernamePrefix !== undefined ? { usernamePrefix } : {}),
      ...(groupsPrefix !== undefined ? { groupsPrefix } : {}),
    };
  });
}
