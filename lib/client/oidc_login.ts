/**
 * `main_server.ts login`: gets an ID token for the hub from an OpenID Provider, as a kubectl exec
 * credential plugin. A cached token is reused while it has a little life left; then the refresh token
 * is used; otherwise the user logs in, either with the authorization code flow and PKCE through a
 * loopback redirect (`http://127.0.0.1:PORT/callback`; the user opens the printed URL in a browser) or
 * with the device flow for terminals without a browser. Prompts go to stderr (kubectl shows them);
 * stdout carries only the credential.
 *
 * `npm:openid-client` does the OAuth and OpenID Connect client protocol (discovery, PKCE, code and
 * device grants, refresh, ID token checks): the plugin is an OAuth client, which jose alone is not.
 * @module
 */

import * as oidc from "openid-client";
import { type CachedTokens, dropCache, readCache, writeCache } from "./token_cache.ts";

/** Settings of one login. */
export interface LoginOptions {
  issuer: string;
  clientId: string;
  /** PEM of the CA of the issuer's HTTPS certificate, when not a public one. */
  caPem?: string;
  cacheDir: string;
  flow: "browser" | "device";
  /** Space-separated scopes (default `openid email profile groups offline_access`). */
  scopes?: string;
  /** How long to wait for the user to finish logging in (default 5 minutes). */
  timeoutMs?: number;
  /** Prints a line for the user (stderr). */
  tell: (line: string) => void;
}

/** A token is renewed when it has less than this left, so kubectl never sends one about to expire. */
export const renewBeforeMs = 30_000;

const defaultScopes = "openid email profile groups offline_access";

/** An ID token for the hub and when it expires: cached, refreshed, or from a new login. */
export async function idToken(opts: LoginOptions): Promise<{ idToken: string; expiresAt: number }> {
  const cached = await readCache(opts.cacheDir, opts.issuer, opts.clientId);
  if (cached && cached.expiresAt - Date.now() > renewBeforeMs) return cached;
  const client = opts.caPem ? Deno.createHttpClient({ caCerts: [opts.caPem] }) : undefined;
  try {
    const config = await discover(opts, client);
    if (cached?.refreshToken) {
      try {
        const tokens = await oidc.refreshTokenGrant(config, cached.refreshToken);
        return await keep(opts, tokens, cached.refreshToken);
      } catch (e) {
        opts.tell(`tower login: refresh refused (${(e as Error).message}); logging in again`);
        await dropCache(opts.cacheDir, opts.issuer, opts.clientId);
      }
    }
    const tokens = opts.flow === "device"
      ? await deviceLogin(config, opts)
      : await browserLogin(config, opts);
    return await keep(opts, tokens, undefined);
  } finally {
    client?.close();
  }
}

async function discover(
  opts: LoginOptions,
  client: Deno.HttpClient | undefined,
): Promise<oidc.Configuration> {
  // openid-client's fetch hook hands over a URL string and fetch options (its body type is narrower in
  // name only: it sends URLSearchParams or strings).
  const via = (url: string, init: oidc.CustomFetchOptions): Promise<Response> =>
    fetch(url, { ...init, body: init.body as BodyInit | undefined, ...(client ? { client } : {}) });
  const config = await oidc.discovery(new URL(opts.issuer), opts.clientId, undefined, oidc.None(), {
    [oidc.customFetch]: via,
    timeout: 10,
  });
  config[oidc.customFetch] = via;
  return config;
}

type Tokens = Awaited<ReturnType<typeof oidc.refreshTokenGrant>>;

async function keep(
  opts: LoginOptions,
  tokens: Tokens,
  previousRefresh: string | undefined,
): Promise<CachedTokens> {
  const claims = tokens.claims();
  if (!tokens.id_token || !claims) throw new Error(`${opts.issuer} answered without an ID token`);
  const kept: CachedTokens = {
    issuer: opts.issuer,
    clientId: opts.clientId,
    idToken: tokens.id_token,
    expiresAt: claims.exp * 1000,
    ...(tokens.refresh_token ?? previousRefresh
      ? { refreshToken: tokens.refresh_token ?? previousRefresh }
      : {}),
  };
  await writeCache(opts.cacheDir, kept);
  return kept;
}

/** The authorization code flow with PKCE, the code arriving at a one-shot loopback listener. */
async function browserLogin(config: oidc.Configuration, opts: LoginOptions): Promise<Tokens> {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const abort = new AbortController();
  let arrived!: (url: URL) => void;
  const callback = new Promise<URL>((resolve) => arrived = resolve);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: abort.signal,
    onListen: () => {},
  }, (req) => {
    const url = new URL(req.url);
    // Only the redirect of this login is answered; anything else on the port is not ours.
    if (url.pathname !== "/callback" || url.searchParams.get("state") !== state) {
      return new Response("not found\n", { status: 404 });
    }
    arrived(url);
    const ok = !url.searchParams.has("error");
    return new Response(
      ok ? "Logged in to Tower. You can close this window.\n" : "Login failed; see the terminal.\n",
      { headers: { "content-type": "text/plain; charset=utf-8" } },
    );
  });
  try {
    const redirectUri = `http://127.0.0.1:${server.addr.port}/callback`;
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: opts.scopes ?? defaultScopes,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    opts.tell(`tower login: open this URL in a browser to log in to ${opts.issuer}:\n  ${url.href}`);
    const timeout = opts.timeoutMs ?? 300_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const returned = await Promise.race([
      callback,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no login within ${timeout / 1000} s`)), timeout);
      }),
    ]).finally(() => clearTimeout(timer));
    const error = returned.searchParams.get("error");
    if (error) {
      throw new Error(
        `${opts.issuer} refused the login: ${error} ${returned.searchParams.get("error_description") ?? ""}`,
      );
    }
    // openid-client checks state, PKCE, the ID token's signature, issuer, audience and nonce.
    const current = new URL(redirectUri);
    current.search = returned.search;
    return await oidc.authorizationCodeGrant(config, current, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
    });
  } finally {
    abort.abort();
    await server.finished;
  }
}

/** The device authorization grant: the user enters a code on another device; this side polls. */
async function deviceLogin(config: oidc.Configuration, opts: LoginOptions): Promise<Tokens> {
  const started = await oidc.initiateDeviceAuthorization(config, { scope: opts.scopes ?? defaultScopes });
  opts.tell(
    `tower login: on any device, open ${started.verification_uri} and enter the code ${started.user_code}` +
      (started.verification_uri_complete ? `\n  (or open ${started.verification_uri_complete})` : ""),
  );
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(),
    Math.min(opts.timeoutMs ?? 300_000, started.expires_in * 1000),
  );
  try {
    return await oidc.pollDeviceAuthorizationGrant(config, started, undefined, { signal: abort.signal });
  } finally {
    clearTimeout(timer);
  }
}
