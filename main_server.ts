/**
 * Tower hub entrypoint.
 *
 *   main_server.ts serve [--listen HOST:PORT] [--data-dir DIR] [--forward [HOST:]PORT=CLUSTER/ENDPOINT]…
 *   main_server.ts fingerprint
 *   main_server.ts cluster add NAME [--hub-url wss://HOST:PORT/tunnel]
 *   main_server.ts cluster list | remove NAME | rotate-token NAME
 * @module
 */
// deno-lint-ignore-file no-console

import {
  ConfigError,
  exitWithConfigError,
  parseDuration,
  parseFlags,
  parseHostPort,
} from "./lib/config/mod.ts";
import { logger, setLogLevel } from "./lib/log/log.ts";
import {
  addCluster,
  type IssuedToken,
  listClusters,
  loadHostKey,
  parseForward,
  removeCluster,
  rotateToken,
  startHub,
} from "./lib/server/mod.ts";

const usage = `Tower hub

Usage:
  main_server.ts serve [flags]               run the hub
  main_server.ts fingerprint                 print the hub's SSH host key fingerprint
  main_server.ts cluster add NAME [--hub-url wss://HOST:PORT/tunnel]
  main_server.ts cluster list
  main_server.ts cluster remove NAME
  main_server.ts cluster rotate-token NAME

Common flags:
  --data-dir DIR       registry, keys and certificates (default: $TOWER_DATA_DIR or ./.tower)

serve flags:
  --listen HOST:PORT   front door for agents and users (default 0.0.0.0:8443)
  --tls-cert FILE --tls-key FILE   serve this certificate instead of one from the hub CA
  --plain-http         no TLS (only behind a TLS-terminating proxy or for local tests)
  --name NAME          extra DNS name or IP for the generated serving certificate (repeatable)
  --forward [HOST:]PORT=CLUSTER/ENDPOINT   expose an agent-published endpoint as a TCP port (repeatable)
  --keepalive DURATION agent keepalive interval; a silent agent is dropped after 3 (default 10s)
  --login-timeout DURATION  a tunnel that has not logged in by then is closed (default 20s)
  --log-level LEVEL    debug, info, warn, error (default info)
`;

function dataDirOf(flag: unknown): string {
  return typeof flag === "string" ? flag : Deno.env.get("TOWER_DATA_DIR") ?? "./.tower";
}

function printIssued(t: IssuedToken, what: string): void {
  console.log(`${what} '${t.cluster}'.

Join token (shown once; the hub keeps only its hash):
  ${t.token}

Hub: ${t.hubUrl}    fingerprint: ${t.fingerprint}    CA: ${t.caFile}

Run an agent by hand:
  ${t.agentCommand}

Or deploy it into the cluster (kubectl apply -f -):
---
${t.manifest}`);
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    "data-dir": { type: "string" },
    listen: { type: "string", default: "0.0.0.0:8443" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "plain-http": { type: "boolean", default: false },
    name: { type: "string", multiple: true, default: [] },
    forward: { type: "string", multiple: true, default: [] },
    keepalive: { type: "string", default: "10s" },
    "login-timeout": { type: "string", default: "20s" },
    "log-level": { type: "string", default: "info" },
  });
  const level = String(values["log-level"]);
  if (!["debug", "info", "warn", "error"].includes(level)) {
    throw new ConfigError(`--log-level '${level}' is unknown`);
  }
  setLogLevel(level as "info");
  const { host, port } = parseHostPort(String(values.listen), "--listen");
  const certFile = values["tls-cert"] as string | undefined;
  const keyFile = values["tls-key"] as string | undefined;
  if (!certFile !== !keyFile) throw new ConfigError("--tls-cert and --tls-key go together");
  if (values["plain-http"] && certFile) {
    throw new ConfigError("--plain-http and --tls-cert exclude each other");
  }
  const log = logger({ component: "hub" });
  const hub = await startHub({
    dataDir: dataDirOf(values["data-dir"]),
    host,
    port,
    tls: values["plain-http"]
      ? { mode: "plain" }
      : certFile && keyFile
      ? { mode: "files", certFile, keyFile }
      : { mode: "self-signed", names: values.name as string[] },
    forwards: (values.forward as string[]).map(parseForward),
    keepaliveMs: parseDuration(String(values.keepalive), "--keepalive"),
    handshakeTimeoutMs: parseDuration(String(values["login-timeout"]), "--login-timeout"),
    log,
  });
  log.info("hub listening", {
    listen: `${host}:${hub.port}`,
    tls: !values["plain-http"],
    fingerprint: hub.fingerprint,
    clusters: hub.registry().clusters.length,
  });
  const stop = async (signal: string) => {
    log.info("hub stopping", { signal });
    await hub.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
}

async function cluster(args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseFlags(rest, {
    "data-dir": { type: "string" },
    "hub-url": { type: "string" },
  });
  const dataDir = dataDirOf(values["data-dir"]);
  const name = positionals[0];
  const needName = () => {
    if (!name || positionals.length > 1) throw new ConfigError(`cluster ${verb} takes exactly one NAME`);
    return name;
  };
  switch (verb) {
    case "add":
      return printIssued(
        await addCluster(dataDir, needName(), values["hub-url"] as string | undefined),
        "Added cluster",
      );
    case "rotate-token":
      return printIssued(await rotateToken(dataDir, needName()), "New token for cluster");
    case "remove":
      await removeCluster(dataDir, needName());
      return console.log(`Removed cluster '${name}'; a running hub closes its sessions now.`);
    case "list": {
      const { hubRunning, rows } = await listClusters(dataDir);
      const table = [["NAME", "AGENTS", "SINCE", "BYTES-IN", "BYTES-OUT"]];
      for (const r of rows) {
        table.push([r.name, String(r.agents), r.since ?? "-", String(r.bytesIn), String(r.bytesOut)]);
      }
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
      if (!hubRunning) console.log("(the hub is not running: no live sessions shown)");
      return;
    }
    default:
      throw new ConfigError(`unknown cluster command '${verb ?? ""}' (add, list, remove, rotate-token)`);
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return await serve(rest);
    case "fingerprint": {
      const { values } = parseFlags(rest, { "data-dir": { type: "string" } });
      return console.log((await loadHostKey(dataDirOf(values["data-dir"]))).fingerprint);
    }
    case "cluster":
      return await cluster(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      return console.log(usage);
    default:
      throw new ConfigError(`unknown command '${command}'\n\n${usage}`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof ConfigError) exitWithConfigError("tower-server", e);
    console.error(`tower-server: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
