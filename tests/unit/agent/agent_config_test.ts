/** The agent's flags and environment: every mistake is a ConfigError that says what to fix. @module */

import assert from "node:assert/strict";
import { join } from "node:path";
import { loadAgentConfig } from "../../../lib/agent/mod.ts";
import { ConfigError } from "../../../lib/config/mod.ts";
import { withScratchDir } from "../../helpers/tower_procs.ts";
import { expectConfigRejection, type MessagePart } from "../../helpers/config_error.ts";

const fp = "SHA256:" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK0123+/";
const token = "tower_" + "t".repeat(43);

/** An env lookup over a fixed map, as the entrypoint passes `Deno.env.get`. */
function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

/** Flags for a valid plain-ws agent, with some replaced or dropped. */
function flags(over: Record<string, string | string[] | null> = {}): string[] {
  const base: Record<string, string | string[] | null> = {
    hub: "ws://127.0.0.1:8443/tunnel",
    cluster: "prod",
    token,
    "hub-fingerprint": fp,
    ...over,
  };
  return Object.entries(base).flatMap(([k, v]) =>
    v === null ? [] : (Array.isArray(v) ? v : [v]).flatMap((x) => [`--${k}`, x])
  );
}

function refused(args: string[], env: Record<string, string>, ...parts: MessagePart[]): Promise<void> {
  return expectConfigRejection(loadAgentConfig(args, envOf(env)), ...parts);
}
const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

Deno.test("loadAgentConfig: a complete set of flags gives a typed config with defaults", async () => {
  const cfg = await loadAgentConfig(
    flags({ publish: ["echo=127.0.0.1:7", "kubernetes=10.0.0.1:443"] }),
    envOf({}),
  );
  assert.equal(cfg.hubUrl.toString(), "ws://127.0.0.1:8443/tunnel");
  assert.equal(cfg.cluster, "prod");
  assert.equal(cfg.token, token);
  assert.equal(cfg.hubFingerprint, fp);
  assert.equal(cfg.ca, undefined);
  assert.deepEqual(cfg.publish, [
    { name: "echo", host: "127.0.0.1", port: 7 },
    { name: "kubernetes", host: "10.0.0.1", port: 443 },
  ]);
  assert.equal(cfg.keepaliveMs, 10_000);
  assert.equal(cfg.backoffCapMs, 30_000);
  assert.equal(cfg.logLevel, "info");
  assert.deepEqual(cfg.proxyEnv, { httpsProxy: undefined, httpProxy: undefined, noProxy: undefined });
});

Deno.test("loadAgentConfig: everything can come from the environment", async () => {
  const cfg = await loadAgentConfig(
    [],
    envOf({
      TOWER_HUB_URL: "ws://hub.internal:80",
      TOWER_CLUSTER: "edge-1",
      TOWER_TOKEN: token,
      TOWER_HUB_FINGERPRINT: fp,
      TOWER_PUBLISH: "echo=7, web=web.local:8080,",
      TOWER_KEEPALIVE: "2s",
      TOWER_BACKOFF_MAX: "1m",
      TOWER_LOG_LEVEL: "debug",
      https_proxy: "http://proxy:3128",
      HTTP_PROXY: "http://plain:3128",
      no_proxy: "localhost",
    }),
  );
  assert.equal(cfg.hubUrl.toString(), "ws://hub.internal/tunnel", "a bare host gets the /tunnel path");
  assert.equal(cfg.cluster, "edge-1");
  assert.deepEqual(cfg.publish, [
    { name: "echo", host: "127.0.0.1", port: 7 },
    { name: "web", host: "web.local", port: 8080 },
  ]);
  assert.equal(cfg.keepaliveMs, 2000);
  assert.equal(cfg.backoffCapMs, 60_000);
  assert.equal(cfg.logLevel, "debug");
  assert.deepEqual(cfg.proxyEnv, {
    httpsProxy: "http://proxy:3128",
    httpProxy: "http://plain:3128",
    noProxy: "localhost",
  });
});

Deno.test("loadAgentConfig: flags win over the environment", async () => {
  const cfg = await loadAgentConfig(
    flags({ hub: "ws://flag-hub:1/tunnel", cluster: "from-flag", token: "tower_flag", publish: ["a=1"] }),
    envOf({
      TOWER_HUB_URL: "ws://env-hub:2/tunnel",
      TOWER_CLUSTER: "from-env",
      TOWER_TOKEN: "tower_env",
      TOWER_HUB_FINGERPRINT: "SHA256:" + "E".repeat(43),
      TOWER_PUBLISH: "b=2",
      TOWER_KEEPALIVE: "bogus",
    }),
  ).catch((e) => e);
  // TOWER_KEEPALIVE is still read when no flag overrides it.
  assert.ok(cfg instanceof ConfigError && cfg.message.startsWith("--keepalive"), String(cfg));

  const ok = await loadAgentConfig(
    flags({ hub: "ws://flag-hub:1/tunnel", cluster: "from-flag", token: "tower_flag", publish: ["a=1"] }),
    envOf({
      TOWER_HUB_URL: "ws://env-hub:2/tunnel",
      TOWER_CLUSTER: "from-env",
      TOWER_TOKEN: "tower_env",
      TOWER_HUB_FINGERPRINT: "SHA256:" + "E".repeat(43),
      TOWER_PUBLISH: "b=2",
    }),
  );
  assert.equal(ok.hubUrl.host, "flag-hub:1");
  assert.equal(ok.cluster, "from-flag");
  assert.equal(ok.token, "tower_flag");
  assert.equal(ok.hubFingerprint, fp);
  assert.deepEqual(ok.publish.map((p) => p.name), ["a"]);
});

Deno.test("loadAgentConfig: missing hub, cluster, fingerprint or token says which flag or env var", async () => {
  await refused(flags({ hub: null }), {}, "--hub (or TOWER_HUB_URL) is required");
  await refused(flags({ cluster: null }), {}, "--cluster (or TOWER_CLUSTER) is required");
  await refused(
    flags({ "hub-fingerprint": null }),
    {},
    "--hub-fingerprint (or TOWER_HUB_FINGERPRINT) is required",
  );
  await refused(flags({ token: null }), {}, "a join token is required", "--token-file", "TOWER_TOKEN");
  await refused(flags({ hub: "" }), {}, "--hub (or TOWER_HUB_URL) is required");
});

Deno.test("loadAgentConfig: the hub must be a ws:// or wss:// URL", async () => {
  await refused(
    flags({ hub: "http://hub:8443/tunnel" }),
    {},
    "--hub 'http://hub:8443/tunnel' must start with ws:// or wss://",
  );
  await refused(flags({ hub: "https://hub/tunnel" }), {}, "must start with ws:// or wss://");
  await refused(flags({ hub: "hub.example.com:8443" }), {}, "must start with ws:// or wss://");
  await refused(flags({ hub: "not a url" }), {}, "--hub 'not a url' is not a URL");
});

Deno.test("loadAgentConfig: a bad fingerprint or cluster name is refused with the expected shape", async () => {
  await refused(
    flags({ "hub-fingerprint": "SHA256:short" }),
    {},
    "'SHA256:short'",
    "OpenSSH SHA256 fingerprint",
    "main_server.ts fingerprint",
  );
  await refused(flags({ "hub-fingerprint": "aa:bb:cc" }), {}, "OpenSSH SHA256 fingerprint");
  await refused(flags({ cluster: "Prod_1" }), {}, "cluster name 'Prod_1' is not a DNS label");
});

Deno.test("loadAgentConfig: wss needs --ca-file, which must exist and hold a PEM certificate", async () => {
  await refused(flags({ hub: "wss://hub:8443/tunnel" }), {}, "--ca-file is required for wss://");
  await withScratchDir("agent-config", async (dir) => {
    const missing = join(dir, "nope.crt");
    await refused(flags({ hub: "wss://hub:8443/tunnel", "ca-file": missing }), {}, `--ca-file ${missing}`);
    const notPem = join(dir, "not.crt");
    await Deno.writeTextFile(notPem, "hello");
    await refused(
      flags({ hub: "wss://hub:8443/tunnel", "ca-file": notPem }),
      {},
      `--ca-file ${notPem} holds no PEM certificate`,
    );
    const good = join(dir, "ca.crt");
    await Deno.writeTextFile(good, pem);
    const cfg = await loadAgentConfig(
      flags({ hub: "wss://hub:8443/tunnel" }),
      envOf({ TOWER_CA_FILE: good }),
    );
    assert.equal(cfg.ca, pem);
  });
});

Deno.test("loadAgentConfig: the token comes from a file (trimmed), and only from one place", async () => {
  await withScratchDir("agent-config", async (dir) => {
    const file = join(dir, "token");
    await Deno.writeTextFile(file, `  ${token}\n`);
    const cfg = await loadAgentConfig(flags({ token: null, "token-file": file }), envOf({}));
    assert.equal(cfg.token, token);
    const viaEnv = await loadAgentConfig(flags({ token: null }), envOf({ TOWER_TOKEN_FILE: file }));
    assert.equal(viaEnv.token, token);

    await refused(flags({ "token-file": file }), {}, "give the token once", "--token-file");
    await refused(flags({ token: null, "token-file": file }), { TOWER_TOKEN: token }, "give the token once");
    await refused(
      flags({ token: null }),
      { TOWER_TOKEN: token, TOWER_TOKEN_FILE: file },
      "give the token once",
    );
    const missing = join(dir, "missing");
    await refused(flags({ token: null, "token-file": missing }), {}, `--token-file ${missing}`);
    const empty = join(dir, "empty");
    await Deno.writeTextFile(empty, "\n");
    await refused(flags({ token: null, "token-file": empty }), {}, "a join token is required");
  });
});

Deno.test("loadAgentConfig: --publish must be NAME=HOST:PORT with a valid, unique name", async () => {
  await refused(flags({ publish: ["echo"] }), {}, "--publish 'echo': expected NAME=HOST:PORT");
  await refused(flags({ publish: ["=127.0.0.1:7"] }), {}, "expected NAME=HOST:PORT");
  await refused(flags({ publish: ["Echo=127.0.0.1:7"] }), {}, "--publish 'Echo=127.0.0.1:7'");
  await refused(flags({ publish: ["svc/../x=127.0.0.1:7"] }), {}, "expected NAME=HOST:PORT");
  await refused(
    flags({ publish: ["echo=127.0.0.1:99999"] }),
    {},
    "--publish echo '127.0.0.1:99999' is not HOST:PORT",
  );
  await refused(flags({ publish: ["echo=host:port"] }), {}, "is not HOST:PORT");
  await refused(
    flags({ publish: ["echo=127.0.0.1:7", "echo=127.0.0.1:8"] }),
    {},
    "--publish: endpoint 'echo' is given twice",
  );
  await refused(flags({}), { TOWER_PUBLISH: "echo=7,echo=8" }, "endpoint 'echo' is given twice");
});

Deno.test("loadAgentConfig: durations, log level and stray arguments", async () => {
  await refused(flags({ keepalive: "0s" }), {}, "--keepalive: must be greater than zero");
  await refused(flags({ "backoff-max": "soon" }), {}, "--backoff-max: 'soon' is not a duration");
  await refused(flags({ "log-level": "loud" }), {}, "--log-level 'loud' is unknown");
  await refused([...flags(), "extra"], {}, "unexpected argument 'extra'");
  await refused([...flags(), "--bogus", "1"], {}, "bogus");
});

Deno.test("loadAgentConfig: --hub-connections from 1 to 16, default 2", async () => {
  assert.equal((await loadAgentConfig(flags(), () => undefined)).hubConnections, 2);
  assert.equal((await loadAgentConfig(flags({ "hub-connections": "1" }), () => undefined)).hubConnections, 1);
  assert.equal(
    (await loadAgentConfig(flags({ "hub-connections": "16" }), () => undefined)).hubConnections,
    16,
  );
  assert.equal(
    (await loadAgentConfig(flags(), (n) => n === "TOWER_HUB_CONNECTIONS" ? "3" : undefined)).hubConnections,
    3,
  );
  for (const bad of ["0", "17", "2.5", "two"]) {
    await refused(flags({ "hub-connections": bad }), {}, `--hub-connections '${bad}' must be a whole number`);
  }
});
