/**
 * Draining a hub replica before it stops (SIGTERM): it turns not-ready and marks its lease draining, tells its
 * agents — one after another, over a window — to move their tunnel to another replica, keeps serving
 * while clients still arrive and ordinary requests are in flight, then ends long-running streams
 * cleanly. The caller then closes the hub.
 *
 * When no other replica is alive there is nowhere to move to: agents are not told to move, and the drain
 * ends as soon as the ordinary requests in flight are done.
 * @module
 */

import type { Logger } from "../log/log.ts";
import type { AgentConnection } from "../tunnel/mod.ts";
import type { InFlight } from "./in_flight.ts";

/** What a drain acts on. */
export interface DrainDeps {
  inFlight: InFlight;
  /** The agent sessions this replica holds now. */
  agents(): AgentConnection[];
  /** Whether some other replica holds a live lease and is not draining. */
  othersAlive(): boolean;
  /** Marks this replica's lease as draining at once (peers stop counting it for new tunnels). */
  markDraining(): Promise<void>;
  /**
   * Whether every cluster this replica holds agents of is also held by another live replica that is not
   * draining (its agents have moved); without a peer link, not asked.
   */
  heldElsewhere?: () => Promise<boolean>;
  log: Logger;
}

/** Timing of a drain. */
export interface DrainOptions {
  /** The whole drain never takes longer than this. */
  timeoutMs: number;
  /** With other replicas alive, the drain ends only after no request started for this long. */
  quietMs: number;
  /** Reconnect requests are spread over at most this long (and at most a third of the timeout). */
  staggerMs: number;
}

/** What a drain did, for the log. */
export interface DrainReport {
  agentsAsked: number;
  ordinaryLeft: number;
  longRunningEnded: number;
  /** Channels relayed for peers, asked to wind down at the end. */
  relayedWoundDown: number;
  timedOut: boolean;
  ms: number;
}

/** Reconnect requests go out at most this often on average (50 agents a second). */
const staggerStepMs = 20;

/** How often a drain asks whether its agents' clusters are held elsewhere (a bounded loop). */
const heldPollMs = 250;

/**
 * Longest wait for ended streams to finish closing, and for peers to end the streams relayed for them at
 * a message boundary (an event or frame in progress needs to arrive whole first).
 */
const endGraceMs = 2000;

/** Drains; settles when the hub may be closed. */
export async function drain(deps: DrainDeps, opts: DrainOptions): Promise<DrainReport> {
  const started = performance.now();
  const deadline = started + opts.timeoutMs;
  const { inFlight, log } = deps;
  inFlight.startDraining();
  const others = deps.othersAlive();
  await deps.markDraining().catch((e) => log.warn("replica lease not marked draining", { error: e }));

  let staggered = true;
  const onStaggered = new Set<() => void>();
  const timers: ReturnType<typeof setTimeout>[] = [];
  const agents = others ? deps.agents() : [];
  if (agents.length) {
    staggered = false;
    const window = Math.min(opts.staggerMs, opts.timeoutMs / 3, agents.length * staggerStepMs);
    let sent = 0;
    agents.forEach((a, i) => {
      timers.push(setTimeout(() => {
        a.send({ type: "reconnect", reason: "hub replica draining" });
        if (++sent < agents.length) return;
        staggered = true;
        for (const h of onStaggered) h();
      }, Math.floor((i * window) / agents.length)));
    });
  }
  log.info("hub draining", {
    others,
    agentsToMove: agents.length,
    ordinaryInFlight: inFlight.ordinary,
    longRunningInFlight: inFlight.longRunning,
    timeoutMs: opts.timeoutMs,
  });

  // Agents asked to move keep their tunnel here until it closes: wait until another replica holds each
  // cluster, so a cluster whose agents hold one tunnel each is never left without one.
  let movedAt = started;
  if (agents.length && deps.heldElsewhere) {
    await until(inFlight, deadline, () => staggered, () => opts.timeoutMs, (h) => {
      onStaggered.add(h);
      return () => onStaggered.delete(h);
    });
    for (let i = 0; performance.now() < deadline && i < 1000; i++) {
      if (await deps.heldElsewhere().catch(() => false)) break;
      await new Promise((r) => setTimeout(r, heldPollMs));
    }
    movedAt = performance.now();
  }
  // Quiet counts from the start of the drain too: a load balancer needs that long to see not-ready; and
  // from the move: peers' route answers naming this replica age out meanwhile.
  const quietFor = () => Math.min(inFlight.quietForMs(), performance.now() - movedAt);
  const settled = () => inFlight.ordinary === 0 && (!others || (staggered && quietFor() >= opts.quietMs));
  await until(
    inFlight,
    deadline,
    settled,
    () => staggered ? Math.max(1, opts.quietMs - quietFor()) : opts.timeoutMs,
    (h) => {
      onStaggered.add(h);
      return () => onStaggered.delete(h);
    },
  );
  const timedOut = !settled();
  // A drain cut short by the timeout sends no more requests to move.
  for (const t of timers) clearTimeout(t);
  const ordinaryLeft = inFlight.ordinary;
  const longRunningEnded = inFlight.endLongRunning();
  const relayedLeft = inFlight.relaying;
  await until(
    inFlight,
    performance.now() + endGraceMs,
    () => inFlight.longRunning === 0 && inFlight.relaying === 0,
    () => endGraceMs,
  );
  const report = {
    agentsAsked: agents.length,
    ordinaryLeft,
    longRunningEnded,
    relayedWoundDown: relayedLeft,
    timedOut,
    ms: Math.round(performance.now() - started),
  };
  log.info("hub drained", { ...report });
  return report;
}

/**
 * Waits until `done()` holds or `deadline` (a performance.now() time) passes, re-checking on every
 * request start and end, on every `onEvent` event, and after `recheckMs()` (for conditions that become
 * true with time).
 */
async function until(
  inFlight: InFlight,
  deadline: number,
  done: () => boolean,
  recheckMs: () => number,
  onEvent?: (handler: () => void) => () => void,
): Promise<void> {
  while (!done()) {
    const left = deadline - performance.now();
    if (left <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(finish, Math.min(left, recheckMs()));
      const off = inFlight.onChange(finish);
      const offEvent = onEvent?.(finish);
      function finish() {
        clearTimeout(timer);
        off();
        offEvent?.();
        resolve();
      }
    });
  }
}
