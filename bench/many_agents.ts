/**
 * Runs many agents in one process (scenario 5), each logged in as its own cluster. Reads a JSON file:
 * `{ hubUrl, fingerprint, caFile, hubConnections, agents: [{ cluster, token }] }` (written by
 * `startManyAgents` in bench/_util.ts). Logs only warnings and errors.
 *
 *   deno run -A bench/many_agents.ts AGENTS.json
 * @module
 */

import { logger, setLogLevel } from "../lib/log/log.ts";
import { startAgent } from "../lib/agent/mod.ts";
import { checkFingerprint } from "../lib/tunnel/mod.ts";

const spec = JSON.parse(await Deno.readTextFile(Deno.args[0]!));
setLogLevel("warn");
const log = logger({ component: "bench-agents" });
const ca = spec.caFile ? await Deno.readTextFile(spec.caFile) : undefined;
for (const a of spec.agents as { cluster: string; token: string }[]) {
  startAgent({
    hubUrl: new URL(spec.hubUrl),
    cluster: a.cluster,
    token: a.token,
    hubFingerprint: checkFingerprint(spec.fingerprint),
    ca,
    publish: [],
    keepaliveMs: 30_000,
    backoffCapMs: 8_000,
    hubConnections: spec.hubConnections ?? 2,
    proxyEnv: {},
    logLevel: "warn",
    metricsListen: undefined,
    kubernetes: undefined,
    services: undefined,
  }, log);
}
