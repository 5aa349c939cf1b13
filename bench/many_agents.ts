/**
 * Runs many agents in one process (scenario 5), each logged in as its own cluster. Reads a JSON file:
 * `{ hubUrls, fingerprint, caFile, hubConnections, agents: [{ cluster, token }] }` (written by
 * `startManyAgents` in bench/_util.ts). Each publishes one endpoint, `kubernetes`, as a real
 * agent does (a hub's drain checks that each of its clusters is held elsewhere through it). Logs only
 * warnings and errors.
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
const hubUrls = (spec.hubUrls as string[]).map((u) => new URL(u));
for (const [j, a] of (spec.agents as { cluster: string; token: string }[]).entries()) {
  startAgent({
    hubUrl: hubUrls[j % hubUrls.length]!,
    cluster: a.cluster,
    token: a.token,
    hubFingerprint: checkFingerprint(spec.fingerprint),
    ca,
    // What a real agent publishes (its API server); nothing dials it while the agents idle.
    publish: [{ name: "kubernetes", host: "127.0.0.1", port: 9 }],
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
