/** Proxy choice for the agent's dial: HTTPS_PROXY/HTTP_PROXY/NO_PROXY, and passwords kept out of text. @module */

import assert from "node:assert/strict";
import { ConfigError } from "../../../lib/config/mod.ts";
import { bypassesProxy, proxyFor, redactUrl } from "../../../lib/tunnel/proxy_dial.ts";
import { expectConfigError } from "../../helpers/config_error.ts";

const wss = new URL("wss://hub.example.com:8443/tunnel");
const ws = new URL("ws://hub.example.com:8080/tunnel");

Deno.test("proxyFor: wss uses HTTPS_PROXY (then HTTP_PROXY), ws uses HTTP_PROXY only", () => {
  const env = { httpsProxy: "http://secure-proxy:3128", httpProxy: "http://plain-proxy:3128" };
  assert.equal(proxyFor(wss, env)?.host, "secure-proxy:3128");
  assert.equal(proxyFor(ws, env)?.host, "plain-proxy:3128");
  assert.equal(proxyFor(wss, { httpProxy: "http://plain-proxy:3128" })?.host, "plain-proxy:3128");
  assert.equal(proxyFor(ws, { httpsProxy: "http://secure-proxy:3128" }), undefined);
  assert.equal(proxyFor(wss, {}), undefined);
  assert.equal(proxyFor(wss, { httpsProxy: "" }), undefined);
  // A bare host:port is taken as http://.
  const bare = proxyFor(wss, { httpsProxy: "proxy.corp:8080" });
  assert.equal(bare?.protocol, "http:");
  assert.equal(bare?.host, "proxy.corp:8080");
  const withAuth = proxyFor(wss, { httpsProxy: "http://user:p%40ss@proxy:3128" });
  assert.equal(withAuth?.username, "user");
  assert.equal(withAuth?.password, "p%40ss");
});

Deno.test("proxyFor: NO_PROXY wins over a configured proxy", () => {
  const env = { httpsProxy: "http://proxy:3128", noProxy: "localhost,.example.com" };
  assert.equal(proxyFor(wss, env), undefined);
  assert.equal(proxyFor(new URL("wss://other.org/tunnel"), env)?.host, "proxy:3128");
});

Deno.test("proxyFor: an https:// proxy is refused with a clear ConfigError that hides the password", () => {
  expectConfigError(
    () => proxyFor(wss, { httpsProxy: "https://user:hunter2@proxy:3128" }),
    "only http:// proxies (HTTP CONNECT) are supported",
    "https://***@proxy:3128",
    /^(?!.*hunter2)/s, // and never the password
  );
  assert.throws(() => proxyFor(wss, { httpsProxy: "socks5://proxy:1080" }), ConfigError);
  expectConfigError(() => proxyFor(wss, { httpsProxy: "http://[bad" }), "is not a URL");
});

Deno.test("redactUrl hides userinfo and keeps the rest", () => {
  assert.equal(redactUrl("http://user:secret@proxy:3128"), "http://***@proxy:3128/");
  assert.equal(redactUrl("user:secret@proxy:3128"), "http://***@proxy:3128/");
  assert.equal(redactUrl("http://proxy:3128"), "http://proxy:3128/");
  assert.equal(redactUrl("http://tokenish@proxy:3128"), "http://***@proxy:3128/");
  assert.equal(redactUrl("wss://a:b@hub.example:8443/tunnel"), "wss://***@hub.example:8443/tunnel");
  assert.equal(redactUrl("http://[bad"), "<unparseable>");
});

Deno.test("bypassesProxy: *, exact host, .suffix, host:port, IP", () => {
  const t = (url: string, list: string) => bypassesProxy(new URL(url), list);
  assert.ok(t("wss://anything.io/tunnel", "*"));
  assert.ok(t("wss://hub.example.com/tunnel", "hub.example.com"));
  assert.ok(t("wss://HUB.Example.com/tunnel", "hub.example.COM"), "case-insensitive");
  assert.ok(!t("wss://hub.example.com/tunnel", "other.example.com"));
  // Suffixes, with or without a leading dot or *.
  assert.ok(t("wss://hub.example.com/tunnel", ".example.com"));
  assert.ok(t("wss://hub.example.com/tunnel", "*.example.com"));
  assert.ok(t("wss://a.b.example.com/tunnel", "example.com"));
  assert.ok(!t("wss://notexample.com/tunnel", "example.com"), "a suffix matches whole labels only");
  assert.ok(!t("wss://example.com.evil.org/tunnel", ".example.com"));
  // host:port matches that port only; wss defaults to 443, ws to 80.
  assert.ok(t("wss://hub.example.com:8443/tunnel", "hub.example.com:8443"));
  assert.ok(!t("wss://hub.example.com:9443/tunnel", "hub.example.com:8443"));
  assert.ok(t("wss://hub.example.com/tunnel", "hub.example.com:443"));
  assert.ok(t("ws://hub.example.com/tunnel", "hub.example.com:80"));
  assert.ok(!t("ws://hub.example.com/tunnel", "hub.example.com:443"));
  // IPs.
  assert.ok(t("ws://127.0.0.1:8080/tunnel", "127.0.0.1"));
  assert.ok(t("ws://127.0.0.1:8080/tunnel", "127.0.0.1:8080"));
  assert.ok(!t("ws://127.0.0.2:8080/tunnel", "127.0.0.1"));
  assert.ok(t("ws://[::1]:8080/tunnel", "::1"));
  // Lists: commas and/or spaces, empty entries ignored.
  assert.ok(t("wss://hub.example.com/tunnel", " localhost , ,hub.example.com "));
  assert.ok(t("wss://hub.example.com/tunnel", "localhost hub.example.com"));
  assert.ok(!t("wss://hub.example.com/tunnel", ""));
  assert.ok(!t("wss://hub.example.com/tunnel", " , "));
});
