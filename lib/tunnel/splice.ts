/** Joins two byte streams both ways, with half-close, and reports what crossed. @module */

import type { Duplex } from "node:stream";

/** Bytes that crossed a splice, from the point of view of its first stream. */
export interface SpliceStats {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
  /** The first error either side reported, if any. */
  error?: Error;
}

/**
 * Pipes `a` into `b` and `b` into `a`. When one side stops sending, the other side's writing half is
 * ended once everything before it is flushed (half-close). The splice is done when both directions are
 * flushed, or when either side fails or closes early; then both are destroyed and `onDone` runs once.
 * Backpressure is the pipes' own.
 */
export function splice(a: Duplex, b: Duplex, onDone?: (stats: SpliceStats) => void): void {
  const stats: SpliceStats = { aToB: 0, bToA: 0 };
  const state = new Map([[a, { readEnded: false, writeDone: false }], [b, {
    readEnded: false,
    writeDone: false,
  }]]);
  let done = false;
  const finish = (error?: Error) => {
    if (done) return;
    done = true;
    if (error) stats.error = error;
    a.destroy();
    b.destroy();
    onDone?.(stats);
  };
  const wire = (from: Duplex, to: Duplex, count: (n: number) => void) => {
    from.on("data", (chunk: Uint8Array) => count(chunk.length));
    const onEnd = () => {
      state.get(from)!.readEnded = true;
      halfClose(to, () => {
        state.get(to)!.writeDone = true;
        if (state.get(a)!.writeDone && state.get(b)!.writeDone) finish();
      });
    };
    // A peer that sent nothing and hung up before the splice began has already emitted 'end'.
    if (from.readableEnded) queueMicrotask(onEnd);
    else from.once("end", onEnd);
    from.once("error", (e: Error) => finish(e));
    from.once("close", () => {
      const s = state.get(from)!;
      // A close before the read half ended is an abort: nothing more can cross.
      if (!s.readEnded) return setImmediate(() => finish());
      // A clean end followed by a full close (a server answering and hanging up): nothing more can be
      // written to `from`, but what it sent must still reach the other side before both are destroyed.
      s.writeDone = true;
      if (state.get(a)!.writeDone && state.get(b)!.writeDone) finish();
    });
    from.pipe(to, { end: false });
  };
  wire(a, b, (n) => void (stats.aToB += n));
  wire(b, a, (n) => void (stats.bToA += n));
}

/** An ssh2 channel, as far as half-closing it is concerned. */
interface SshChannelLike {
  eof(): void;
  server?: boolean;
}

/**
 * Ends the writing half of `s` once everything written so far is out, then calls `flushed`. ssh2 closes
 * a server-side channel outright on `end()`, so for those only an SSH EOF is sent, which keeps the other
 * direction open.
 */
function halfClose(s: Duplex, flushed: () => void): void {
  if (s.destroyed) return;
  const ch = s as Duplex & Partial<SshChannelLike>;
  if (typeof ch.eof === "function" && ch.server) {
    s.write(new Uint8Array(0), () => {
      ch.eof!();
      flushed();
    });
  } else {
    s.end(flushed);
  }
}
