/**
 * A real OpenID Provider for the single sign-on tests (zitadel/oidc's example OP wrapped in
 * tests/cluster/gomod/oidc-provider, built once by build.sh), served over HTTPS with a test CA, and a
 * "browser" that logs in through its HTML forms: a real HTTP client with a cookie jar that follows
 * redirects, fills the login form's fields and submits it, as a person would. No token is ever made by
 * the tests themselves.
 * @module
 */

import { join } from "node:path";
import { findGoTool } from "../cluster/bins.ts";
import { type CertPair, createCa, issueLeaf } from "../../lib/server/tls_material.ts";

/** A user of the provider. */
export interface ProviderUser {
  username: string;
  password: string;
  email: string;
  groups: string[];
}

/** A running provider. */
export interface OidcProvider {
  issuer: string;
  /** PEM file of the CA of its HTTPS certificate. */
  caFile: string;
  caPem: string;
  /** Makes a new signing key; `retire` also stops publishing every older key. Returns the new key ID. */
  rotateKey(retire: boolean): Promise<string>;
  /** Its stderr so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/** A test CA and a serving certificate for 127.0.0.1, written into `dir`. */
export async function providerTls(
  dir: string,
): Promise<{ ca: CertPair; caFile: string; certFile: string; keyFile: string }> {
  const ca = await createCa("oidc test CA");
  const leaf = await issueLeaf(ca, {
    commonName: "oidc-provider",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
    validMs: 86_400_000,
  });
  const caFile = join(dir, "oidc-ca.pem");
  const certFile = join(dir, "oidc-server.pem");
  const keyFile = join(dir, "oidc-server.key");
  await Deno.writeTextFile(caFile, ca.cert);
  await Deno.writeTextFile(certFile, leaf.cert);
  await Deno.writeTextFile(keyFile, leaf.key, { mode: 0o600 });
  return { ca, caFile, certFile, keyFile };
}

/** Starts the provider with these users and client IDs; waits until it serves. */
export async function startOidcProvider(opts: {
  dir: string;
  name: string;
  users: ProviderUser[];
  clients: string[];
  tls: { caFile: string; certFile: string; keyFile: string; ca: CertPair };
  idTokenTtl?: string;
}): Promise<OidcProvider> {
  const binary = await findGoTool("oidc-provider");
  const usersFile = join(opts.dir, `${opts.name}-users.json`);
  await Deno.writeTextFile(usersFile, JSON.stringify(opts.users));
  const child = new Deno.Command(binary, {
    args: [
      "-listen",
      "127.0.0.1:0",
      "-users",
      usersFile,
      ...opts.clients.flatMap((c) => ["-client", c]),
      "-tls-cert",
      opts.tls.certFile,
      "-tls-key",
      opts.tls.keyFile,
      ...(opts.idTokenTtl ? ["-id-token-ttl", opts.idTokenTtl] : []),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const errPump = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      errText = (errText + chunk).slice(-20_000);
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
  let issuer: string | undefined;
  while (!issuer) {
    const { value, done } = await reader.read();
    if (done) {
      clearTimeout(deadline);
      await errPump;
      throw new Error(`oidc-provider ${opts.name} exited before serving: ${errText}`);
    }
    out += value;
    const line = out.split("\n").find((l) => l.includes('"listening"'));
    if (line) issuer = JSON.parse(line).issuer;
  }
  clearTimeout(deadline);
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep stdout flowing */ }
  })();
  const client = Deno.createHttpClient({ caCerts: [opts.tls.ca.cert] });
  const address = JSON.parse(out.split("\n").find((l) => l.includes('"listening"'))!).address as string;
  return {
    issuer,
    caFile: opts.tls.caFile,
    caPem: opts.tls.ca.cert,
    rotateKey: async (retire) => {
      const r = await fetch(`https://${address}/admin/rotate-key${retire ? "?retire=1" : ""}`, {
        method: "POST",
        client,
      });
      if (!r.ok) throw new Error(`rotate-key: ${r.status}`);
      return (await r.json()).kid;
    },
    log: () => errText,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await Promise.all([errPump, drain]);
      client.close();
    },
  };
}

/** A form on a page: where it posts and its hidden fields. */
function formOf(html: string, page: URL): { action: URL; fields: Record<string, string> } {
  const form = /<form[^>]*method="POST"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) throw new Error(`no form on ${page.href}: ${html.slice(0, 300)}`);
  const action = /action="([^"]*)"/.exec(form[0])?.[1] ?? "";
  const fields: Record<string, string> = {};
  for (const m of form[1]!.matchAll(/<input[^>]*type="hidden"[^>]*>/g)) {
    const name = /name="([^"]*)"/.exec(m[0])?.[1];
    const value = /value="([^"]*)"/.exec(m[0])?.[1] ?? "";
    if (name) fields[name] = value.replace(/&#43;/g, "+").replace(/&amp;/g, "&");
  }
  return { action: new URL(action || page.pathname + page.search, page), fields };
}

/**
 * A person at a browser: fetches pages with a cookie jar, following redirects one hop at a time (so the
 * final hop to the plugin's loopback listener is a plain request there too).
 */
export class FormBrowser {
  readonly #client: Deno.HttpClient;
  readonly #cookies = new Map<string, string>();

  constructor(caPem: string) {
    this.#client = Deno.createHttpClient({ caCerts: [caPem] });
  }

  /** Requests `url`, following at most 10 redirects; returns the last page's URL, status and text. */
  async open(url: URL, init: { method?: string; form?: Record<string, string> } = {}): Promise<{
    url: URL;
    status: number;
    text: string;
  }> {
    let current = url;
    let method = init.method ?? "GET";
    let body: string | undefined = init.form ? new URLSearchParams(init.form).toString() : undefined;
    for (let hop = 0; hop <= 10; hop++) {
      const r = await fetch(current, {
        method,
        redirect: "manual",
        client: this.#client,
        headers: {
          ...(this.#cookies.size
            ? { cookie: [...this.#cookies].map(([k, v]) => `${k}=${v}`).join("; ") }
            : {}),
          ...(body !== undefined ? { "content-type": "application/x-www-form-urlencoded" } : {}),
        },
        ...(body !== undefined ? { body } : {}),
      });
      for (const c of r.headers.getSetCookie()) {
        const [pair] = c.split(";");
        const eq = pair!.indexOf("=");
        this.#cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
      }
      const location = r.headers.get("location");
      if (r.status >= 300 && r.status < 400 && location) {
        await r.body?.cancel();
        current = new URL(location, current);
        method = "GET";
        body = undefined;
        continue;
      }
      return { url: current, status: r.status, text: await r.text() };
    }
    throw new Error(`more than 10 redirects from ${url.href}`);
  }

  /** Logs in at an authorization URL with the OP's login form; returns the last page (the loopback answer). */
  async authorize(
    authUrl: URL,
    username: string,
    password: string,
  ): Promise<{ url: URL; status: number; text: string }> {
    const login = await this.open(authUrl);
    const { action, fields } = formOf(login.text, login.url);
    return await this.open(action, { method: "POST", form: { ...fields, username, password } });
  }

  /** Completes a device login: enters the user code, logs in, and allows the device. */
  async approveDevice(
    verificationUri: URL,
    userCode: string,
    username: string,
    password: string,
  ): Promise<string> {
    const codePage = await this.open(verificationUri, { method: "POST", form: { user_code: userCode } });
    const { action, fields } = formOf(codePage.text, codePage.url);
    const confirm = await this.open(action, { method: "POST", form: { ...fields, username, password } });
    const allow = /location\.href='([^']*action=allowed)'/.exec(confirm.text)?.[1];
    if (!allow) throw new Error(`no Allow button on ${confirm.url.href}: ${confirm.text.slice(0, 300)}`);
    return (await this.open(new URL(allow, confirm.url))).text;
  }

  close(): void {
    this.#client.close();
  }
}
