/**
 * The ssh2 patches stay tied to the version they were written for: these fail when an ssh2 upgrade
 * changes what fix 1 patches. Fix 2 (every streamlocal open reaches the agent) is watched by
 * tests/tunnel/rogue_hub_test.ts, which needs the agent to log each refused open.
 */

import assert from "node:assert/strict";
import ssh2Package from "ssh2/package.json" with { type: "json" };
import channelModule from "ssh2/lib/Channel.js";
import {
  _shippedChannelDestroy,
  installSsh2Fixes,
  patchedSsh2Version,
} from "../../../lib/tunnel/ssh2_fixes.ts";

/** A stand-in channel that records which of its methods were called. */
function recorder(writableEnded: boolean) {
  const calls: string[] = [];
  return { calls, writableEnded, end: () => void calls.push("end"), close: () => void calls.push("close") };
}

Deno.test("ssh2 is the version the fixes were written for, and installSsh2Fixes refuses any other", () => {
  assert.equal(ssh2Package.version, patchedSsh2Version, "check lib/tunnel/ssh2_fixes.ts, then move its pin");
  const pin = JSON.parse(Deno.readTextFileSync(new URL("../../../deno.json", import.meta.url))).imports.ssh2;
  assert.equal(pin, `npm:ssh2@${patchedSsh2Version}`, "deno.json and ssh2_fixes.ts pin the same version");
  assert.throws(() => installSsh2Fixes("1.18.0"), /ssh2 1\.18\.0 is in use, but .* was written for 1\.17\.0/);
});

Deno.test("Channel.destroy: shipped, it ends an already ended channel again; installed, only a live one", () => {
  // What fix 1 exists for: if an upgrade stops doing this, the fix can go.
  const shipped = recorder(true);
  _shippedChannelDestroy.call(shipped);
  assert.deepEqual(shipped.calls, ["end", "close"]);

  installSsh2Fixes();
  installSsh2Fixes();
  const destroy =
    (channelModule as { Channel: { prototype: { destroy(): unknown } } }).Channel.prototype.destroy;
  const ended = recorder(true);
  destroy.call(ended);
  assert.deepEqual(ended.calls, ["close"]);
  const live = recorder(false);
  destroy.call(live);
  assert.deepEqual(live.calls, ["end", "close"]);
});
