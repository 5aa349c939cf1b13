/** Cluster and endpoint names: the accepted shapes and the message naming a bad one. @module */

import assert from "node:assert/strict";
import { checkClusterName, isClusterName, isEndpointName } from "../../../lib/config/mod.ts";
import { expectConfigError } from "../../helpers/config_error.ts";

Deno.test("checkClusterName accepts DNS labels and names the bad one otherwise", () => {
  for (const good of ["a", "prod", "eu-west-1", "0abc", "a".repeat(63)]) {
    assert.equal(checkClusterName(good), good);
    assert.ok(isClusterName(good));
  }
  for (const bad of ["A_B", "-x", "x-", "a.b", "", "Prod", "a b", "a".repeat(64), "ü"]) {
    assert.equal(isClusterName(bad), false, bad);
    expectConfigError(() => checkClusterName(bad), `'${bad}'`, "DNS label");
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
