/**
 * Two fixes to `ssh2` (pinned at 1.17.0 in deno.json; both touch its internals, so check them when it
 * moves).
 *
 * 1. Applied once when the tunnel modules load:
 * `Channel.destroy()` calls `end()` unconditionally. Node streams call `destroy()` themselves once both
 * sides of a channel are done (autoDestroy), when `end()` has long happened, so every closed channel built
 * an `ERR_STREAM_ALREADY_FINISHED` error, stack trace included, and dropped it. Profiled at concurrency 32
 * through the Kubernetes proxy (one channel per request), that was 12 % of the hub's CPU time and 7 % of
 * the agent's (BENCHMARKS.md). The replacement ends only a channel that is not ending yet; everything else
 * is as before.
 *
 * 2. {@link routeEveryStreamLocalOpen}: an `ssh2.Client` turns down a streamlocal channel open for a name
 * it never forwarded without a word, so a hub asking for something the agent did not publish would leave
 * no trace on the agent. With this, every such open reaches the agent's own handler, which refuses and
 * logs it (lib/tunnel/agent_ssh.ts).
 * @module
 */

// The library's own module, for its class; it has no type declarations of its own.
import channelModule from "ssh2/lib/Channel.js";

interface ChannelLike {
  writableEnded: boolean;
  end(): void;
  close(): void;
}

const proto = (channelModule as { Channel: { prototype: ChannelLike & { destroy(): unknown } } }).Channel
  .prototype;

proto.destroy = function (this: ChannelLike) {
  if (!this.writableEnded) this.end();
  this.close();
  return this;
};

/** Makes `client` hand every streamlocal channel open to its `unix connection` listeners. */
export function routeEveryStreamLocalOpen(client: object): void {
  // ssh2 sets the table up in connect() and consults it per open: `table[path] !== undefined`.
  const c = client as { _forwardingUnix?: Record<string, unknown> };
  const table = c._forwardingUnix ?? {};
  c._forwardingUnix = new Proxy(table, {
    get: (t, key) => (typeof key === "string" ? (t[key] ?? false) : undefined),
  });
}
