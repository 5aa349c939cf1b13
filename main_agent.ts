/**
 * Tower agent entrypoint: runs in (or next to) a cluster, dials out to the hub, serves what it publishes.
 * Exits 2 on a configuration error; never exits on a transient one. `--help` lists the flags.
 * @module
 */
// deno-lint-ignore-file no-console

import { ConfigError, exitWithConfigError } from "./lib/config/mod.ts";
import { logger, setLogLevel } from "./lib/log/log.ts";
import { agentUsage, loadAgentConfig, startAgent } from "./lib/agent/mod.ts";
import { HostKeyMismatchError, installSsh2Fixes } from "./lib/tunnel/mod.ts";

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(agentUsage);
    Deno.exit(0);
  }
  try {
    const cfg = await loadAgentConfig(Deno.args, (name) => Deno.env.get(name));
    setLogLevel(cfg.logLevel);
    const log = logger({ component: "agent" });
    installSsh2Fixes();
    // prom-client is loaded only for an agent that serves metrics.
    const metrics = cfg.metricsListen
      ? new (await import("./lib/agent/agent_metrics.ts")).AgentMetrics()
      : undefined;
    const agent = startAgent(cfg, log, metrics);
    Deno.addSignalListener("SIGHUP", () => {
      log.info("SIGHUP: reconnecting now");
      agent.reconnectNow();
    });
    const stop = () => {
      agent.stop();
      setTimeout(() => Deno.exit(0), 500);
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    await agent.done;
    Deno.exit(0);
  } catch (e) {
    if (e instanceof ConfigError) exitWithConfigError("tower-agent", e);
    if (e instanceof HostKeyMismatchError) exitWithConfigError("tower-agent", new ConfigError(e.message));
    console.error(`tower-agent: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
