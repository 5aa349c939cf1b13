/** The long-running split a draining hub uses, table-tested. */

import assert from "node:assert/strict";
import { isLongRunning, longRunningKind } from "../../../lib/kube/long_running.ts";

Deno.test("long-running requests: watch, log, exec, attach, port-forward, proxy and Service paths", () => {
  const table: [string, string, boolean][] = [
    ["GET", "/clusters/a/api/v1/namespaces/default/pods", false],
    ["GET", "/clusters/a/api/v1/namespaces/default/pods?watch=true", true],
    ["GET", "/clusters/a/api/v1/pods?watch=1&resourceVersion=5", true],
    ["GET", "/clusters/a/api/v1/watch/namespaces/default/pods", true],
    ["GET", "/clusters/a/apis/apps/v1/namespaces/x/deployments?watch=false", false],
    ["GET", "/clusters/a/apis/apps/v1/watch/deployments", true],
    ["GET", "/clusters/a/api/v1/namespaces/default/pods/p/log?follow=true", true],
    ["GET", "/clusters/a/api/v1/namespaces/default/pods/p/log", true],
    ["POST", "/clusters/a/api/v1/namespaces/default/pods/p/exec?command=ls", true],
    ["GET", "/clusters/a/api/v1/namespaces/default/pods/p/attach", true],
    ["POST", "/clusters/a/api/v1/namespaces/default/pods/p/portforward", true],
    ["GET", "/clusters/a/api/v1/namespaces/default/services/s:80/proxy/x", true],
    ["GET", "/clusters/a/api/v1/nodes/n/proxy/metrics", true],
    ["GET", "/clusters/a/api/v1/namespaces/default/pods/p/status", false],
    ["GET", "/clusters/a/api/v1/namespaces/exec", false],
    ["GET", "/clusters/a/api/v1/namespaces/log/pods", false],
    ["POST", "/clusters/a/api/v1/namespaces/default/configmaps", false],
    ["GET", "/clusters/a/services/web/hello:80/", true],
    ["GET", "/clusters/a/version", false],
    ["GET", "/clusters/a", false],
    // A cluster's dedicated port has no prefix.
    ["GET", "/api/v1/pods?watch=true", true],
    ["GET", "/api/v1/pods", false],
    ["GET", "/openapi/v3", false],
  ];
  for (const [method, url, want] of table) assert.equal(isLongRunning(method, url), want, `${method} ${url}`);
});

Deno.test("long-running kinds, for the metrics: upgrades are always long-running", () => {
  const table: [string, string, boolean, string | undefined][] = [
    ["GET", "/clusters/a/api/v1/pods?watch=true", false, "watch"],
    ["GET", "/api/v1/namespaces/a/pods/p/log", false, "log"],
    ["POST", "/clusters/a/api/v1/namespaces/a/pods/p/exec?command=sh", true, "exec"],
    ["GET", "/api/v1/namespaces/a/pods/p/attach", true, "attach"],
    ["POST", "/api/v1/namespaces/a/pods/p/portforward", true, "portforward"],
    ["GET", "/api/v1/nodes/n/proxy/metrics", false, "proxy"],
    ["GET", "/services/ns/web:80/", false, "service"],
    ["GET", "/clusters/a/services/ns/db:5432", true, "service"],
    ["GET", "/some/other/path", true, "upgrade"],
    ["GET", "/api/v1/pods", false, undefined],
    // A refused exec never upgraded is still of the exec kind: the API server says the same.
    ["POST", "/api/v1/namespaces/a/pods/p/exec", false, "exec"],
  ];
  for (const [method, url, upgraded, want] of table) {
    assert.equal(longRunningKind(method, url, upgraded), want, `${method} ${url} upgraded=${upgraded}`);
  }
});
