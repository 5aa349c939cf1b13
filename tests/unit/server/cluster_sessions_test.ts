/**
 * ClusterSessions' choice of agent: a kept-alive channel on an agent that holds clearly more channels
 * than the agent a new channel would go to is "crowded" (closed rather than reused), so an agent that
 * joins later gets requests while the others' connections stay busy.
 */

import assert from "node:assert/strict";
import type { AgentConnection } from "../../../lib/tunnel/mod.ts";
import { ClusterSessions } from "../../../lib/server/cluster_sessions.ts";

/** The parts of an agent session that the choice reads. */
function agent(id: string, openChannels: number, opts: { late?: boolean; modes?: string[] } = {}) {
  return {
    id,
    cluster: "c",
    closed: false,
    openChannels,
    endpoints: new Set(["kubernetes"]),
    modes: opts.modes ?? ["impersonate"],
    isLate: () => opts.late ?? false,
    onClose: () => {},
  };
}

const asSession = (a: ReturnType<typeof agent>) => a as unknown as AgentConnection;

Deno.test("crowded: an agent is crowded only when another would take the next channel and holds 2+ fewer", () => {
  const sessions = new ClusterSessions();
  const a = agent("a", 5);
  const b = agent("b", 5);
  sessions.add(asSession(a));
  sessions.add(asSession(b));
  const crowded = (x: ReturnType<typeof agent>, suits?: (s: AgentConnection) => boolean) =>
    sessions.crowded(asSession(x), "kubernetes", suits);

  // Balanced, or one channel apart: kept-alive channels are reused on both.
  assert.equal(crowded(a), false);
  assert.equal(crowded(b), false);
  a.openChannels = 6;
  assert.equal(crowded(a), false);
  // Two apart: the busier one's idle connections make way.
  a.openChannels = 7;
  assert.equal(crowded(a), true);
  assert.equal(crowded(b), false);
  // A late agent is no better choice, however few channels it holds.
  const late = agent("late", 0, { late: true });
  const sessions2 = new ClusterSessions();
  sessions2.add(asSession(a));
  sessions2.add(asSession(late));
  assert.equal(sessions2.crowded(asSession(a), "kubernetes"), false);
  // Nor one that does not suit the request (another auth mode), nor one without the endpoint.
  const other = agent("other", 0, { modes: ["passthrough"] });
  const sessions3 = new ClusterSessions();
  sessions3.add(asSession(a));
  sessions3.add(asSession(other));
  const impersonating = (s: AgentConnection) =>
    (s as unknown as { modes: string[] }).modes.includes("impersonate");
  assert.equal(sessions3.crowded(asSession(a), "kubernetes", impersonating), false);
  assert.equal(sessions3.crowded(asSession(a), "kubernetes"), true);
  assert.equal(sessions3.crowded(asSession(a), "svc/ns/name:80"), false);
  // A single agent is never crowded.
  const alone = new ClusterSessions();
  alone.add(asSession(a));
  assert.equal(alone.crowded(asSession(a), "kubernetes"), false);
});
