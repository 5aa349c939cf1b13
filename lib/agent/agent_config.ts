/**
 * The agent's configuration from flags and environment, validated once with messages that say what to
 * fix. Flags win over environment variables.
 * @module
 */

import {
  checkClusterName,
  ConfigError,
  isEndpointName,
  parseDuration,
  parseFlags,
  parseHostPort,
} from "../config/mod.ts";
import { checkFingerprint, type ProxyEnv, redactUrl } from "../tunnel/mod.ts";
import type { AuthMode } from "./kube_endpoint.ts";
import type { ServiceAllowlist } from "./service_controller.ts";

/** A `--publish NAME=HOST:PORT` entry. */
export interface PublishedTcp {
  name: string;
  host: string;
  port: number;
}

/** Everything the agent runs with. */
export interface AgentConfig {
  hubUrl: URL;
  cluster: string;
  token: string;
  hubFingerprint: string;
  /** Hub CA bundle (PEM) for wss. */
  ca: string | undefined;
  publish: PublishedTcp[];
  keepaliveMs: number;
  backoffCapMs: number;
  /** Tunnels to distinct hub replicas the agent keeps (fewer when there are fewer replicas). */
  hubConnections: number;
  proxyEnv: ProxyEnv;
  logLevel: "debug" | "info" | "warn" | "error";
  /** Where to serve `/metrics` (undefined: not served). */
  metricsListen: { host: string; port: number } | undefined;
  /** Serve the cluster's API server as endpoint `kubernetes` (undefined: not enabled). */
  kubernetes: KubernetesConfig | undefined;
  /** Services for hub users and the LoadBalancer controller (needs `kubernetes`). */
  services: ServicesConfig | undefined;
}

/** Which Services the agent serves, and the LoadBalancer class it implements. */
export interface ServicesConfig {
  allow: ServiceAllowlist;
  lbClass: string;
  lbWithoutClass: boolean;
}

/** How the agent reaches its cluster's API server. */
export interface KubernetesConfig {
  apiserver: URL;
  caPem: string;
  tokenFile: string;
  modes: AuthMode[];
}

/** Most tunnels an agent keeps: each holds an SSH session on a replica, and few replicas add safety. */
const maxHubConnections = 16;

/** Usage text of main_agent.ts. */
export const agentUsage = `Tower agent: dials out to the hub and serves what it publishes.

Usage: main_agent.ts [flags]            (each flag also reads the env var in brackets)
  --hub URL                 ws://HOST:PORT/tunnel or wss://… [TOWER_HUB_URL]
  --cluster NAME            cluster name registered on the hub [TOWER_CLUSTER]
  --token TOKEN             join token [TOWER_TOKEN]  (prefer the env var or --token-file)
  --token-file FILE         file holding the join token [TOWER_TOKEN_FILE]
  --hub-fingerprint FP      pinned hub host key, SHA256:… ('main_server.ts fingerprint') [TOWER_HUB_FINGERPRINT]
  --ca-file FILE            CA bundle for wss:// (the hub's ca.crt) [TOWER_CA_FILE]
  --publish NAME=HOST:PORT  serve endpoint NAME by dialing HOST:PORT (repeatable) [TOWER_PUBLISH, comma-separated]
  --keepalive DURATION      keepalive interval; a silent hub is dropped after 3 (default 10s) [TOWER_KEEPALIVE]
  --backoff-max DURATION    longest wait between reconnects (default 30s) [TOWER_BACKOFF_MAX]
  --hub-connections N       keep tunnels to N distinct hub replicas, 1-${maxHubConnections} (default 2) [TOWER_HUB_CONNECTIONS]
  --log-level LEVEL         debug, info, warn, error (default info) [TOWER_LOG_LEVEL]
  --metrics-listen HOST:PORT  serve Prometheus /metrics here (default: not served) [TOWER_METRICS_LISTEN]
  --kubernetes              serve this cluster's API server as endpoint 'kubernetes' [TOWER_KUBERNETES=true]
  --apiserver URL           API server (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT) [TOWER_APISERVER]
  --sa-dir DIR              ServiceAccount token and ca.crt (default /var/run/secrets/kubernetes.io/serviceaccount) [TOWER_SA_DIR]
  --auth-modes LIST         identity modes this cluster accepts: impersonate, passthrough (default impersonate) [TOWER_AUTH_MODES]
  --services-namespaces LIST  namespaces whose Services hub users may reach ('*' = all; default none) [TOWER_SERVICES_NAMESPACES]
  --services-selector K=V,…   only Services with these labels [TOWER_SERVICES_SELECTOR]
  --lb-class NAME           loadBalancerClass Tower implements (default tower.dev/lb) [TOWER_LB_CLASS]
  --lb-without-class        also serve LoadBalancer Services that name no class [TOWER_LB_WITHOUT_CLASS=true]
  --no-services             no Service watch and no LoadBalancer controller [TOWER_SERVICES=false]
HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured (HTTP CONNECT, user:pass@ allowed).
SIGHUP reconnects at once.`;

/** Parses and validates the agent's flags and environment; reads the token and CA files. */
export async function loadAgentConfig(
  args: string[],
  env: (name: string) => string | undefined,
): Promise<AgentConfig> {
  const { values, positionals } = parseFlags(args, {
    hub: { type: "string" },
    cluster: { type: "string" },
    token: { type: "string" },
    "token-file": { type: "string" },
    "hub-fingerprint": { type: "string" },
    "ca-file": { type: "string" },
    publish: { type: "string", multiple: true },
    keepalive: { type: "string" },
    "backoff-max": { type: "string" },
    "hub-connections": { type: "string" },
    "log-level": { type: "string" },
    kubernetes: { type: "boolean" },
    apiserver: { type: "string" },
    "sa-dir": { type: "string" },
    "auth-modes": { type: "string" },
    "services-namespaces": { type: "string" },
    "services-selector": { type: "string" },
    "lb-class": { type: "string" },
    "lb-without-class": { type: "boolean" },
    "no-services": { type: "boolean" },
    "metrics-listen": { type: "string" },
  });
  if (positionals.length) throw new ConfigError(`unexpected argument '${positionals[0]}'`);
  // Each flag has an environment variable beside it: looked up by name, as text.
  const flags: Record<string, unknown> = values;
  const get = (flag: string, envName: string) => (flags[flag] as string | undefined) ?? env(envName);
  const need = (flag: string, envName: string) => {
    const v = get(flag, envName);
    if (!v) throw new ConfigError(`--${flag} (or ${envName}) is required`);
    return v;
  };

  const hubText = need("hub", "TOWER_HUB_URL");
  let hubUrl: URL;
  try {
    hubUrl = new URL(hubText);
  } catch {
    throw new ConfigError(`--hub '${hubText}' is not a URL`);
  }
  if (hubUrl.protocol !== "ws:" && hubUrl.protocol !== "wss:") {
    throw new ConfigError(`--hub '${redactUrl(hubText)}' must start with ws:// or wss://`);
  }
  if (hubUrl.pathname === "/") hubUrl.pathname = "/tunnel";

  let token = get("token", "TOWER_TOKEN");
  const tokenFile = get("token-file", "TOWER_TOKEN_FILE");
  if (token && tokenFile) throw new ConfigError("give the token once: --token/TOWER_TOKEN or --token-file");
  if (tokenFile) {
    try {
      token = (await Deno.readTextFile(tokenFile)).trim();
    } catch (e) {
      throw new ConfigError(`--token-file ${tokenFile}: ${(e as Error).message}`);
    }
  }
  if (!token) throw new ConfigError("a join token is required: --token-file, TOWER_TOKEN or --token");

  const caFile = get("ca-file", "TOWER_CA_FILE");
  let ca: string | undefined;
  if (caFile) {
    try {
      ca = await Deno.readTextFile(caFile);
    } catch (e) {
      throw new ConfigError(`--ca-file ${caFile}: ${(e as Error).message}`);
    }
    if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ConfigError(`--ca-file ${caFile} holds no PEM certificate`);
    }
  } else if (hubUrl.protocol === "wss:") {
    throw new ConfigError(
      "--ca-file is required for wss:// (the hub's ca.crt, or the CA of the TLS front in between)",
    );
  }

  const publishText = (values.publish as string[] | undefined) ??
    (env("TOWER_PUBLISH") ?? "").split(",").filter((s) => s.trim());
  const publish = publishText.map((p) => {
    const eq = p.indexOf("=");
    const name = p.slice(0, eq).trim();
    if (eq < 0 || !isEndpointName(name)) throw new ConfigError(`--publish '${p}': expected NAME=HOST:PORT`);
    return { name, ...parseHostPort(p.slice(eq + 1).trim(), `--publish ${name}`, "127.0.0.1") };
  });
  const names = new Set<string>();
  for (const p of publish) {
    if (names.has(p.name)) throw new ConfigError(`--publish: endpoint '${p.name}' is given twice`);
    names.add(p.name);
  }

  const level = get("log-level", "TOWER_LOG_LEVEL") ?? "info";
  if (!["debug", "info", "warn", "error"].includes(level)) {
    throw new ConfigError(`--log-level '${level}' is unknown`);
  }

  const metricsText = get("metrics-listen", "TOWER_METRICS_LISTEN");
  const kubeOn = values.kubernetes === true || env("TOWER_KUBERNETES") === "true";
  const kubernetes = kubeOn ? await loadKubernetes(get, env) : undefined;

  const servicesOff = values["no-services"] === true || env("TOWER_SERVICES") === "false";
  const services = kubernetes && !servicesOff ? loadServices(get, env, values) : undefined;

  return {
    kubernetes,
    services,
    hubUrl,
    cluster: checkClusterName(need("cluster", "TOWER_CLUSTER")),
    token,
    hubFingerprint: checkFingerprint(need("hub-fingerprint", "TOWER_HUB_FINGERPRINT")),
    ca,
    publish,
    keepaliveMs: parseDuration(get("keepalive", "TOWER_KEEPALIVE") ?? "10s", "--keepalive"),
    backoffCapMs: parseDuration(get("backoff-max", "TOWER_BACKOFF_MAX") ?? "30s", "--backoff-max"),
    hubConnections: hubConnections(get("hub-connections", "TOWER_HUB_CONNECTIONS") ?? "2"),
    proxyEnv: {
      httpsProxy: env("HTTPS_PROXY") ?? env("https_proxy"),
      httpProxy: env("HTTP_PROXY") ?? env("http_proxy"),
      noProxy: env("NO_PROXY") ?? env("no_proxy"),
    },
    logLevel: level as AgentConfig["logLevel"],
    metricsListen: metricsText === undefined ? undefined : parseHostPort(metricsText, "--metrics-listen"),
  };
}

function hubConnections(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > maxHubConnections) {
    throw new ConfigError(
      `--hub-connections '${text}' must be a whole number from 1 to ${maxHubConnections}`,
    );
  }
  return n;
}

async function loadKubernetes(
  get: (flag: string, envName: string) => string | undefined,
  env: (name: string) => string | undefined,
): Promise<KubernetesConfig> {
  let text = get("apiserver", "TOWER_APISERVER");
  if (!text) {
    const host = env("KUBERNETES_SERVICE_HOST");
    const port = env("KUBERNETES_SERVICE_PORT") ?? "443";
    if (!host) {
      throw new ConfigError("--kubernetes needs --apiserver, or KUBERNETES_SERVICE_HOST as set inside a pod");
    }
    text = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
  let apiserver: URL;
  try {
    apiserver = new URL(text);
  } catch {
    throw new ConfigError(`--apiserver '${text}' is not a URL`);
  }
  if (apiserver.protocol !== "https:") throw new ConfigError(`--apiserver '${text}' must be https://`);
  const saDir = get("sa-dir", "TOWER_SA_DIR") ?? "/var/run/secrets/kubernetes.io/serviceaccount";
  const tokenFile = `${saDir}/token`;
  let caPem: string;
  try {
    caPem = await Deno.readTextFile(`${saDir}/ca.crt`);
    await Deno.stat(tokenFile);
  } catch (e) {
    throw new ConfigError(`--sa-dir ${saDir}: ${(e as Error).message} (needs token and ca.crt)`);
  }
  const modes = (get("auth-modes", "TOWER_AUTH_MODES") ?? "impersonate").split(",").map((m) => m.trim())
    .filter(
      Boolean,
    );
  for (const m of modes) {
    if (m !== "impersonate" && m !== "passthrough") {
      throw new ConfigError(`--auth-modes: '${m}' is not a mode (impersonate, passthrough)`);
    }
  }
  if (!modes.length) throw new ConfigError("--auth-modes names no mode");
  return { apiserver, caPem, tokenFile, modes: modes as AuthMode[] };
}

function loadServices(
  get: (flag: string, envName: string) => string | undefined,
  env: (name: string) => string | undefined,
  values: Record<string, unknown>,
): ServicesConfig {
  const namespaces = (get("services-namespaces", "TOWER_SERVICES_NAMESPACES") ?? "").split(",").map((s) =>
    s.trim()
  )
    .filter(Boolean);
  for (const ns of namespaces) {
    if (ns !== "*" && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns)) {
      throw new ConfigError(`--services-namespaces: '${ns}' is not a namespace name`);
    }
  }
  const selector: Record<string, string> = {};
  for (
    const pair of (get("services-selector", "TOWER_SERVICES_SELECTOR") ?? "").split(",").filter((s) =>
      s.trim()
    )
  ) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--services-selector: '${pair}' is not KEY=VALUE`);
    selector[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  const lbClass = get("lb-class", "TOWER_LB_CLASS") ?? "tower.dev/lb";
  if (!/^[a-z0-9.-]+\/[A-Za-z0-9._-]+$/.test(lbClass)) {
    throw new ConfigError(`--lb-class '${lbClass}' must look like DOMAIN/NAME (e.g. tower.dev/lb)`);
  }
  return {
    allow: { namespaces, selector },
    lbClass,
    lbWithoutClass: values["lb-without-class"] === true || env("TOWER_LB_WITHOUT_CLASS") === "true",
  };
}
