/**
 * The control messages hub and agent exchange, checked field by field where they arrive: a peer that
 * sends a malformed message is a protocol error, not something to guess about. Unknown message types
 * are left to the caller (newer peers may send more).
 * @module
 */

import { isReplicaId } from "../config/mod.ts";
import type { ControlMessage } from "./control_stream.ts";

/** A control message broke the protocol. */
export class ControlProtocolError extends Error {
  override name = "ControlProtocolError";
}

/** What the hub says about itself in answer to the agent's hello. */
export interface HubHello {
  type: "hello";
  version: string;
  /** The identity of the hub replica that holds this tunnel. */
  replica: string;
  /** How many live replicas the hub knows of (itself included). */
  replicas: number;
}

/** What the agent says about itself when its control stream opens. */
export interface AgentHello {
  type: "hello";
  version: string;
  agentId: string;
  keepaliveMs?: number;
  endpoints: string[];
  /** Identity modes the agent's cluster accepts; absent from agents that predate modes. */
  authModes?: string[];
}

/** The hub asks the agent to move this tunnel to another replica. */
export interface ReconnectRequest {
  type: "reconnect";
  reason: string;
}

/** The hub's count of live replicas changed. */
export interface ReplicasUpdate {
  type: "replicas";
  replicas: number;
}

/** More replicas than this in a hello is a protocol error. */
export const maxReplicas = 1000;
/** Most endpoint names an agent may list in its hello. */
const maxHelloEndpoints = 10_000;

function text(msg: ControlMessage, field: string, max: number, required = true): string {
  const v = msg[field];
  if (v === undefined && !required) return "";
  if (typeof v !== "string" || v.length > max) {
    throw new ControlProtocolError(`${msg.type}.${field} must be a string of at most ${max} characters`);
  }
  return v;
}

function replicaCount(msg: ControlMessage): number {
  const n = msg.replicas;
  if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > maxReplicas) {
    throw new ControlProtocolError(`${msg.type}.replicas must be an integer from 1 to ${maxReplicas}`);
  }
  return n as number;
}

/** Checks the hub's hello. */
export function parseHubHello(msg: ControlMessage): HubHello {
  if (msg.type !== "hello") throw new ControlProtocolError(`expected the hub's hello, got '${msg.type}'`);
  const version = text(msg, "version", 64);
  if (!isReplicaId(msg.replica)) {
    throw new ControlProtocolError("hello.replica must be a DNS label");
  }
  return { type: "hello", version, replica: msg.replica, replicas: replicaCount(msg) };
}

/** Checks the agent's hello. */
export function parseAgentHello(msg: ControlMessage): AgentHello {
  const version = text(msg, "version", 64);
  const agentId = text(msg, "agentId", 128);
  let keepaliveMs: number | undefined;
  if (msg.keepaliveMs !== undefined) {
    const ka = msg.keepaliveMs;
    if (typeof ka !== "number" || !Number.isFinite(ka) || ka < 100 || ka > 3_600_000) {
      throw new ControlProtocolError("hello.keepaliveMs must be a number of ms from 100 to 3600000");
    }
    keepaliveMs = ka;
  }
  const list = (field: string, max: number): string[] => {
    const v = msg[field];
    if (!Array.isArray(v) || v.length > max || !v.every((s) => typeof s === "string" && s.length <= 253)) {
      throw new ControlProtocolError(`hello.${field} must be a list of at most ${max} names`);
    }
    return v as string[];
  };
  const endpoints = msg.endpoints === undefined ? [] : list("endpoints", maxHelloEndpoints);
  return {
    type: "hello",
    version,
    agentId,
    ...(keepaliveMs !== undefined ? { keepaliveMs } : {}),
    endpoints,
    ...(msg.authModes !== undefined ? { authModes: list("authModes", 8) } : {}),
  };
}

/** Checks a reconnect request. */
export function parseReconnect(msg: ControlMessage): ReconnectRequest {
  return { type: "reconnect", reason: text(msg, "reason", 200, false) || "asked by the hub" };
}

/** Checks a replica count update. */
export function parseReplicasUpdate(msg: ControlMessage): ReplicasUpdate {
  return { type: "replicas", replicas: replicaCount(msg) };
}
