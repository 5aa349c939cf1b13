/** Control messages are checked field by field, at their bounds. */

import assert from "node:assert/strict";
import {
  type ControlMessage,
  ControlProtocolError,
  maxReplicas,
  parseAgentHello,
  parseHubHello,
  parseReconnect,
  parseReplicasUpdate,
} from "../../../lib/tunnel/mod.ts";

const hubHello = (over: Record<string, unknown>): ControlMessage => ({
  type: "hello",
  version: "0.1.0",
  replica: "hub-0",
  replicas: 3,
  ...over,
});

Deno.test("the hub's hello: replica is a DNS label, replicas an integer from 1 to the bound", () => {
  assert.deepEqual(parseHubHello(hubHello({})), {
    type: "hello",
    version: "0.1.0",
    replica: "hub-0",
    replicas: 3,
  });
  assert.equal(parseHubHello(hubHello({ replica: "a".repeat(63) })).replica.length, 63);
  assert.equal(parseHubHello(hubHello({ replicas: maxReplicas })).replicas, maxReplicas);
  const bad: [string, Record<string, unknown>][] = [
    ["replica too long", { replica: "a".repeat(64) }],
    ["replica not a label", { replica: "Hub_0" }],
    ["replica missing", { replica: undefined }],
    ["replica not a string", { replica: 7 }],
    ["zero replicas", { replicas: 0 }],
    ["too many replicas", { replicas: maxReplicas + 1 }],
    ["fractional replicas", { replicas: 1.5 }],
    ["replicas as text", { replicas: "3" }],
    ["version too long", { version: "v".repeat(65) }],
    ["not a hello", { type: "reconnect" }],
  ];
  for (const [what, over] of bad) {
    assert.throws(() => parseHubHello(hubHello(over)), ControlProtocolError, what);
  }
});

Deno.test("the agent's hello: keepalive, endpoint and mode lists within bounds", () => {
  const ok = parseAgentHello({
    type: "hello",
    version: "0.1.0",
    agentId: "node-1-abcd",
    keepaliveMs: 100,
    endpoints: Array.from({ length: 10_000 }, (_, i) => `svc/ns/s${i}:80`),
    authModes: ["impersonate"],
  });
  assert.equal(ok.endpoints.length, 10_000);
  assert.equal(ok.keepaliveMs, 100);
  // Agents that predate auth modes say nothing about them; the hub then assumes impersonation.
  assert.equal(parseAgentHello({ type: "hello", version: "0", agentId: "a" }).authModes, undefined);
  const base = { type: "hello", version: "0.1.0", agentId: "a" };
  const bad: [string, Record<string, unknown>][] = [
    ["keepalive below 100 ms", { keepaliveMs: 99 }],
    ["keepalive above an hour", { keepaliveMs: 3_600_001 }],
    ["keepalive as text", { keepaliveMs: "1000" }],
    ["too many endpoints", { endpoints: Array.from({ length: 10_001 }, (_, i) => `e${i}`) }],
    ["endpoint name too long", { endpoints: ["e".repeat(254)] }],
    ["endpoints not a list", { endpoints: "kubernetes" }],
    ["too many modes", { authModes: Array(9).fill("impersonate") }],
    ["agent id too long", { agentId: "a".repeat(129) }],
    ["no version", { version: undefined }],
  ];
  for (const [what, over] of bad) {
    assert.throws(() => parseAgentHello({ ...base, ...over } as ControlMessage), ControlProtocolError, what);
  }
});

Deno.test("reconnect and replica-count messages", () => {
  assert.equal(parseReconnect({ type: "reconnect", reason: "replica draining" }).reason, "replica draining");
  assert.equal(parseReconnect({ type: "reconnect" }).reason, "asked by the hub");
  assert.throws(() => parseReconnect({ type: "reconnect", reason: "r".repeat(201) }), ControlProtocolError);
  assert.equal(parseReplicasUpdate({ type: "replicas", replicas: 2 }).replicas, 2);
  assert.throws(() => parseReplicasUpdate({ type: "replicas", replicas: 0 }), ControlProtocolError);
  assert.throws(() => parseReplicasUpdate({ type: "replicas" }), ControlProtocolError);
});
