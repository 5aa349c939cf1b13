/**
 * The `serve` command's flags: parsed once, checked with messages a person can act on, and handed to
 * {@link startHub} typed (as lib/agent/agent_config.ts does for the agent).
 * @module
 */

import { hostname } from "node:os";
import {
  ConfigError,
  type FlagValues,
  isReplicaId,
  newReplicaId,
  parseDuration,
  parseFlags,
  parseHostPort,
  readFlagFile,
} from "../config/mod.ts";
import { isPeerAddress } from "../registry/mod.ts";
import type { Level } from "../log/log.ts";
import type { HubConfig } from "./hub.ts";
import { storageFlags, type StorageOptions, storageOptions } from "./hub_storage.ts";
import type { LbConfig } from "./lb_manager.ts";
import { oidcConfigs } from "./oidc_verifier.ts";
import { parseForward } from "./tcp_forward.ts";
import { defaultUdpFlowCaps } from "./udp_flow_caps.ts";

/** The `serve` part of `main_server.ts --help`. */
export const serveUsage = `serve flags:
  --listen HOST:PORT   front door for agents and users (default 0.0.0.0:8443)
  --tls-cert FILE --tls-key FILE   serve this certificate instead of one from the hub CA
  --plain-http         no TLS (only behind a TLS-terminating proxy or for local tests)
  --name NAME          extra DNS name or IP for the generated serving certificate (repeatable)
  --forward [HOST:]PORT=CLUSTER/ENDPOINT   expose an agent-published endpoint as a TCP port (repeatable)
  --keepalive DURATION agent keepalive interval; a silent agent is dropped after 3 (default 10s)
  --login-timeout DURATION  a tunnel that has not logged in by then is closed (default 20s)
  --audit-log FILE     one JSON line per proxied request; '-' for stdout (default)
  --lb-ports LO-HI     serve LoadBalancer Services of connected clusters on public ports from this range
  --lb-address ADDR    public IP or hostname written into Service status (default: the hub's hostname)
  --lb-bind HOST       where public LoadBalancer ports listen (default 0.0.0.0)
  --lb-udp-idle DURATION   idle UDP flows are closed after this (default 60s)
  --drain-timeout DURATION  on SIGTERM, serve in-flight requests this long at most before stopping
                       (default 30s); SIGINT or a second SIGTERM stops at once
  --peer-listen HOST:PORT   the peer link (mutual TLS with the peer CA) other replicas dial; needed for
                       several replicas, off by default
  --peer-advertise HOST:PORT   the address peers dial (default: the --peer-listen address)
  --lb-udp-flows-per-port N      concurrent UDP flows one public port carries (default 1024)
  --lb-udp-flows-per-source N    concurrent UDP flows of one client address or IPv6 /64 (default 64)
  --lb-udp-flows-per-cluster N   concurrent UDP flows of one cluster, all ports (default 2048)
  --replica-id NAME    this replica's identity, a DNS label (default: host name and a random suffix)
  --admin-group GROUP  hub users in GROUP may use the admin API (/api/tower/v1/), /metrics and the status
                       page (/) on the front door
  --metrics-listen HOST:PORT   also serve /metrics here, without credentials (keep it on an internal network)
  --no-request-metrics   take no per-request metrics (to measure their cost; the page's charts stay empty)
  --log-level LEVEL    debug, info, warn, error (default info)
  --oidc-issuer URL    accept ID tokens from this OpenID Connect issuer (https; repeatable for several)
  --oidc-client-id ID  the audience those tokens must carry (once, or once per issuer)
  --oidc-ca-file FILE  CA of the issuer's HTTPS certificate, when not a public one
  --oidc-username-claim CLAIM   user name claim (default email)
  --oidc-groups-claim CLAIM     groups claim (default groups)
  --oidc-username-prefix P      prefix for user names ('-' for none; default none for email, else ISSUER#)
  --oidc-groups-prefix P        prefix for group names (default none)
                       (each of these is given once, or once per --oidc-issuer in the same order)`;

const serveFlags = {
  ...storageFlags,
  listen: { type: "string", default: "0.0.0.0:8443" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "plain-http": { type: "boolean", default: false },
  name: { type: "string", multiple: true, default: [] as string[] },
  forward: { type: "string", multiple: true, default: [] as string[] },
  keepalive: { type: "string", default: "10s" },
  "login-timeout": { type: "string", default: "20s" },
  "audit-log": { type: "string", default: "-" },
  "lb-ports": { type: "string" },
  "lb-address": { type: "string" },
  "lb-bind": { type: "string", default: "0.0.0.0" },
  "lb-udp-idle": { type: "string", default: "60s" },
  "lb-udp-flows-per-port": { type: "string" },
  "lb-udp-flows-per-source": { type: "string" },
  "lb-udp-flows-per-cluster": { type: "string" },
  "log-level": { type: "string", default: "info" },
  "replica-id": { type: "string" },
  "drain-timeout": { type: "string", default: "30s" },
  "peer-listen": { type: "string" },
  "peer-advertise": { type: "string" },
  "oidc-issuer": { type: "string", multiple: true, default: [] as string[] },
  "oidc-client-id": { type: "string", multiple: true, default: [] as string[] },
  "oidc-ca-file": { type: "string", multiple: true, default: [] as string[] },
  "oidc-username-claim": { type: "string", multiple: true, default: [] as string[] },
  "oidc-groups-claim": { type: "string", multiple: true, default: [] as string[] },
  "oidc-username-prefix": { type: "string", multiple: true, default: [] as string[] },
  "oidc-groups-prefix": { type: "string", multiple: true, default: [] as string[] },
  "admin-group": { type: "string" },
  "metrics-listen": { type: "string" },
  "no-request-metrics": { type: "boolean", default: false },
} as const;

type ServeValues = FlagValues<typeof serveFlags>;

/** Everything `serve` was asked for. */
export interface ServeConfig {
  /** What the hub starts with, less the storage and logger the caller opens from the rest. */
  hub: Omit<HubConfig, "storage" | "log">;
  storage: Omit<StorageOptions, "log">;
  logLevel: Level;
  /** On SIGTERM, in-flight requests are served this long at most. */
  drainTimeoutMs: number;
}

const levels: readonly Level[] = ["debug", "info", "warn", "error"];

/** Parses and checks `serve`'s flags; reads the files they name (OIDC CAs). */
export async function loadServeConfig(
  args: string[],
  env: (name: string) => string | undefined,
): Promise<ServeConfig> {
  const { values, positionals } = parseFlags(args, serveFlags);
  if (positionals.length) throw new ConfigError(`serve: unexpected argument '${positionals[0]}'`);
  const oidc = oidcConfigs({
    issuers: values["oidc-issuer"],
    clientIds: values["oidc-client-id"],
    caPems: await Promise.all(values["oidc-ca-file"].map((f) => readFlagFile(f, "--oidc-ca-file"))),
    usernameClaims: values["oidc-username-claim"],
    groupsClaims: values["oidc-groups-claim"],
    usernamePrefixes: values["oidc-username-prefix"],
    groupsPrefixes: values["oidc-groups-prefix"],
  });
  const logLevel = levels.find((l) => l === values["log-level"]);
  if (!logLevel) throw new ConfigError(`--log-level '${values["log-level"]}' is unknown`);
  const { host, port } = parseHostPort(values.listen, "--listen");
  const certFile = values["tls-cert"];
  const keyFile = values["tls-key"];
  if (!certFile !== !keyFile) throw new ConfigError("--tls-cert and --tls-key go together");
  if (values["plain-http"] && certFile) {
    throw new ConfigError("--plain-http and --tls-cert exclude each other");
  }
  const replicaId = values["replica-id"] ?? newReplicaId(hostname());
  if (!isReplicaId(replicaId)) throw new ConfigError(`--replica-id '${replicaId}' is not a DNS label`);
  const peerListen = values["peer-listen"] === undefined
    ? undefined
    : parseHostPort(values["peer-listen"], "--peer-listen");
  const advertise = values["peer-advertise"];
  if (advertise !== undefined && (!peerListen || !isPeerAddress(advertise))) {
    throw new ConfigError(`--peer-advertise '${advertise}' must be HOST:PORT, with --peer-listen`);
  }
  return {
    hub: {
      oidc,
      replicaId,
      peer: peerListen && { ...peerListen, advertise },
      host,
      port,
      tls: values["plain-http"]
        ? { mode: "plain" }
        : certFile && keyFile
        ? { mode: "files", certFile, keyFile }
        : { mode: "self-signed", names: values.name },
      forwards: values.forward.map(parseForward),
      keepaliveMs: parseDuration(values.keepalive, "--keepalive"),
      auditLog: values["audit-log"],
      lb: lbConfig(values),
      handshakeTimeoutMs: parseDuration(values["login-timeout"], "--login-timeout"),
      adminGroup: values["admin-group"],
      requestMetrics: !values["no-request-metrics"],
      metricsListen: values["metrics-listen"] === undefined
        ? undefined
        : parseHostPort(values["metrics-listen"], "--metrics-listen"),
    },
    storage: storageOptions(values, env),
    logLevel,
    drainTimeoutMs: parseDuration(values["drain-timeout"], "--drain-timeout"),
  };
}

/** One of the UDP flow caps: the flag's whole number from 1, or the default. */
function flowCap(values: ServeValues, which: "per-port" | "per-source" | "per-cluster"): number {
  const flag = `lb-udp-flows-${which}` as const;
  const raw = values[flag];
  if (raw === undefined) {
    return defaultUdpFlowCaps[
      ({ "per-port": "perPort", "per-source": "perSource", "per-cluster": "perCluster" } as const)[which]
    ];
  }
  const n = Number(raw);
  if (!/^\d{1,6}$/.test(raw) || n < 1) {
    throw new ConfigError(`--${flag} '${raw}' must be a whole number from 1`);
  }
  return n;
}

/** Public LoadBalancer ports, when `--lb-ports` asks for them. */
function lbConfig(values: ServeValues): LbConfig | undefined {
  const ports = values["lb-ports"];
  if (ports === undefined) {
    if (values["lb-address"] !== undefined) throw new ConfigError("--lb-address needs --lb-ports");
    return undefined;
  }
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(ports);
  const [lo, hi] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (!m || lo < 1 || hi > 65535 || lo > hi) {
    throw new ConfigError(`--lb-ports '${ports}' must be LO-HI with 1 <= LO <= HI <= 65535`);
  }
  return {
    portRange: [lo, hi],
    publicAddress: values["lb-address"] ?? hostname(),
    bindHost: values["lb-bind"],
    udpIdleMs: parseDuration(values["lb-udp-idle"], "--lb-udp-idle"),
    udpFlowCaps: {
      perPort: flowCap(values, "per-port"),
      perSource: flowCap(values, "per-source"),
      perCluster: flowCap(values, "per-cluster"),
    },
  };
}
