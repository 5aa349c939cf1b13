/** Refusals kubectl reads during discovery carry a `Warning` header (lib/kube/status.ts). */

import assert from "node:assert/strict";
import { isDiscoveryPath, warningValue } from "../../../lib/kube/status.ts";

Deno.test("warningValue quotes the text as RFC 7234 asks and keeps it printable ASCII", () => {
  const table: [string, string][] = [
    [
      "cluster 'ghost' is not registered on this hub",
      `299 - "cluster 'ghost' is not registered on this hub"`,
    ],
    ['a "quoted" word', `299 - "a \\"quoted\\" word"`],
    ["back\\slash", `299 - "back\\\\slash"`],
    ["line\r\nbreak", `299 - "line??break"`],
    ["naïve", `299 - "na?ve"`],
  ];
  for (const [text, want] of table) assert.equal(warningValue(text), want, text);
});

Deno.test("isDiscoveryPath: the paths kubectl reads during discovery", () => {
  const table: [string, boolean][] = [
    ["/", true],
    ["/version", true],
    ["/version?timeout=32s", true],
    ["/api", true],
    ["/api?timeout=32s", true],
    ["/api/v1", true],
    ["/apis", true],
    ["/apis/apps", true],
    ["/apis/apps/v1", true],
    ["/openapi/v3", true],
    ["/openapi/v3/api/v1", true],
    ["/api/v1/pods", false],
    ["/api/v1/namespaces/default/configmaps", false],
    ["/apis/apps/v1/deployments", false],
    ["/healthz", false],
  ];
  for (const [path, want] of table) assert.equal(isDiscoveryPath(path), want, path);
});
