/** HOST:PORT flags: the shapes accepted and the message naming the flag and the text when wrong. @module */

import assert from "node:assert/strict";
import { parseHostPort } from "../../../lib/config/mod.ts";
import { expectConfigError } from "../../helpers/config_error.ts";

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
    expectConfigError(
      () => parseHostPort(bad, "--listen"),
      new RegExp(`^--listen '${RegExp.escape(bad)}' is not HOST:PORT$`),
    );
  }
});
