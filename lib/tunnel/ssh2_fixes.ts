/**
 * Two fixes to `ssh2`, written against {@link patchedSsh2Version} (the version deno.json pins). Both
 * touch its internals, so {@link installSsh2Fixes} refuses to run on another version, and
 * tests/unit/tunnel/ssh2_fixes_test.ts (fix 1) and tests/tunnel/rogue_hub_test.ts (fix 2) fail when an
 * upgrade changes the behaviour they patch.
 *
 * 1. {@link installSsh2Fixes}, called once at start-up by both entrypoints:
 * `Channel.destroy()` calls `end()` unconditionally. Node streams call `destroy()` themselves once both
 * sides of a channel are done (autoDestroy), when `end()` has long happened, so every closed channel built
 * an `ERR_STREAM_ALREADY_FINISHED` error, stack trace included, and dropped it. Profiled at concurrency 32
 * through the Kubernetes proxy (one channel per request), that was 12 % of the hub's CPU time and 7 % of
 * the agent's (BENCHMARKS.md). The replacement ends only a channel that is not ending yet; everything else
 * is as before. Upstream, it goes away once ssh2's `Channel.destroy()` (lib/Channel.js) skips `end()` on a
 * stream whose writable side has ended.
 *
 * 2. {@link routeEveryStreamLocalOpen}: an `ssh2.Client` turns down a streamlocal channel open for a name
 * it never forwarded without a word, so a hub asking for something the agent did not publish would leave
 * no trace on the agent. With this, every such open reaches the agent's own handler, which refuses and
 * logs it (lib/tunnel/agent_ssh.ts). Upstream, it goes away once ssh2's client (lib/client.js, the
 * `forwarded-streamlocal@openssh.com` case of its CHANNEL_OPEN handler) emits opens for unknown socket
 * paths instead of rejecting them itself.
 * @module
 */

// The library's own modules, for its class and version; they have no type declarations of their own.
import channelModule from "ssh2/lib/Channel.js";
import ssh2Package from "ssh2/package.json" with { type: "json" };

/** The ssh2 version both fixes were written and tested against. */
export const patchedSsh2Version = "1.17.0";

interface ChannelLike {
  writableEnded: boolean;
  end(): void;
  close(): void;
}

const proto = (channelModule as { Channel: { prototype: ChannelLike & { destroy(): unknown } } }).Channel
  .prototype;

/** `Channel.prototype.destroy` as ssh2 ships it (kept for the test that watches for upstream changes). */
export const _shippedChannelDestroy: (this: ChannelLike) => unknown = proto.destroy;

function destroyEndingOnlyOnce(this: ChannelLike) {
  if (!this.writableEnded) this.end();
  this.close();
  return this;
}

/**
 * Installs fix 1 (idempotent). Throws when the ssh2 in use is not {@link patchedSsh2Version}: check both
 * fixes against the new version, then move the pin here and in deno.json together.
 */
export function installSsh2Fixes(version: string = ssh2Package.version): void {
  if (version !== patchedSsh2Version) {
    throw new Error(
      `ssh2 ${version} is in use, but lib/tunnel/ssh2_fixes.ts was written for ${patchedSsh2Version}: ` +
        `check its fixes against the new version first`,
    );
  }
  proto.destroy = destroyEndingOnlyOnce;
}

/** Makes `client` hand every streamlocal channel open to its `unix connection` listeners. */
export function routeEveryStreamLocalOpen(client: object): void {
  // ssh2 sets the table up in connect() and consults it per open: `table[path] !== undefined`.
  const c = client as { _forwardingUnix?: Record<string, unknown> };
  const table = c._forwardingUnix ?? {};
  c._forwardingUnix = new Proxy(table, {
    get: (t, key) => (typeof key === "string" ? (t[key] ?? false) : undefined),
  });
}
