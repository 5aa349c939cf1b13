/** Durations, names and HOST:PORT parsing, with the messages a person sees when they are wrong. @module */

import assert from "node:assert/strict";
import {
  checkClusterName,
  ConfigError,
  isClusterName,
  isEndpointName,
  parseDuration,
  parseHostPort,
} from "../../lib/config/mod.ts";

Deno.test("parseDuration reads ms, s, m, h and bare seconds", () => {
  assert.equal(parseDuration("500ms", "--x"), 500);
  assert.equal(parseDuration("10s", "--x"), 10_000);
  assert.equal(parseDuration("2m", "--x"), 120_000);
  assert.equal(parseDuration("1h", "--x"), 3_600_000);
  assert.equal(parseDuration("1.5s", "--x"), 1500);
  assert.equal(parseDuration("3", "--x"), 3000);
  assert.equal(parseDuration(" 7s ", "--x"), 7000);
});

Deno.test("parseDuration refuses garbage and zero with the flag in the message", () => {
  for (const bad of ["", "abc", "10 s", "-1s", "1d", "s", "1.s"]) {
    assert.throws(() => parseDuration(bad, "--keepalive"), (e: unknown) => {
      assert.ok(e instanceof ConfigError, `${bad}: ${e}`);
      assert.match(e.message, /^--keepalive: /);
      assert.match(e.message, /is not a duration/);
      return true;
    });
  }
  assert.throws(() => parseDuration("0s", "--backoff-max"), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /--backoff-max: must be greater than zero, got '0s'/);
    return true;
  });
});

Deno.test("checkClusterName accepts DNS labels and names the bad one otherwise", () => {
  for (const good of ["a", "prod", "eu-west-1", "0abc", "a".repeat(63)]) {
    assert.equal(checkClusterName(good), good);
    assert.ok(isClusterName(good));
  }
  for (const bad of ["A_B", "-x", "x-", "a.b", "", "Prod", "a b", "a".repeat(64), "ü"]) {
    assert.equal(isClusterName(bad), false, bad);
    assert.throws(() => checkClusterName(bad), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.ok(e.message.includes(`'${bad}'`), e.message);
      assert.ok(e.message.includes("DNS label"), e.message);
      return true;
    });
  }
});

Deno.test("isEndpointName accepts the documented shapes and rejects the rest", () => {
  for (const good of ["kubernetes", "echo", "svc/default/web:80", "svc/ns/dns:53/udp", "a.b-c", "x"]) {
    assert.ok(isEndpointName(good), good);
  }
  for (
    const bad of [
      "",
      "..",
      "svc/../etc",
      "svc/./x",
      "a/../b",
      "Echo",
      "KUBERNETES",
      "a b",
      "-a",
      "a/",
      "/a",
      "a_b",
    ]
  ) {
    assert.equal(isEndpointName(bad), false, bad);
  }
});

Deno.test("parseHostPort splits host:port, :port, bare port and [v6]:port", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:8443", "--listen"), { host: "127.0.0.1", port: 8443 });
  assert.deepEqual(parseHostPort("example.com:1", "--listen"), { host: "example.com", port: 1 });
  assert.deepEqual(parseHostPort(":9000", "--listen"), { host: "0.0.0.0", port: 9000 });
  assert.deepEqual(parseHostPort("9000", "--listen"), { host: "0.0.0.0", port: 9000 });
  assert.deepEqual(parseHostPort("9000", "--publish x", "127.0.0.1"), { host: "127.0.0.1", port: 9000 });
  assert.deepEqual(parseHostPort("[::1]:80", "--listen"), { host: "::1", port: 80 });
  assert.deepEqual(parseHostPort("0.0.0.0:0", "--listen"), { host: "0.0.0.0", port: 0 });
});

Deno.test("parseHostPort refuses what is not HOST:PORT, naming the flag and the text", () => {
  for (const bad of ["", "host", "host:", "host:port", "host:65536", "host:123456", "::1:80", "a:b:1"]) {
    assert.throws(() => parseHostPort(bad, "--listen"), (e: unknown) => {
      assert.ok(e instanceof ConfigError, bad);
      assert.equal(e.message, `--listen '${bad}' is not HOST:PORT`);
      return true;
    });
  }
});
