/**
 * Tower hub entrypoint.
 *
 *   main_server.ts serve [--listen HOST:PORT] [--data-dir DIR] [--forward [HOST:]PORT=CLUSTER/ENDPOINT]…
 *   main_server.ts fingerprint
 *   main_server.ts cluster add NAME [--hub-url wss://HOST:PORT/tunnel] [--label KEY=VALUE]…
 *   main_server.ts cluster list | remove NAME | rotate-token NAME | label NAME KEY=VALUE|KEY-…
 *   main_server.ts user add NAME [--group G]… [--extra KEY=VALUE]… [--token] | user list | user remove NAME
 *   main_server.ts user revoke-certs NAME
 *   main_server.ts access allow [--user U]… [--group G]… [--clusters GLOB] [--cluster-selector SEL] | access list
 *   main_server.ts kubeconfig --user NAME [--ttl 8h]
 *   main_server.ts settings [--client-cert-ttl D] [--client-cert-max-ttl D]
 *   main_server.ts kubeconfig --oidc --oidc-issuer URL --oidc-client-id ID [--group G]…
 *   main_server.ts login --issuer URL --client-id ID (kubectl exec credential plugin, client permission set)
 *   main_server.ts registry export | import FILE|- [--replace]
 *   main_server.ts forward --kubeconfig FILE CLUSTER/NAMESPACE/SERVICE:PORT [HOST:]LOCAL_PORT
 * Commands on the hub's state take --registry file|kubernetes (with --kubeconfig FILE, --namespace NS).
 * @module
 */
// deno-lint-ignore-file no-console

import {
  ConfigError,
  exitWithConfigError,
  isReplicaId,
  newReplicaId,
  parseDuration,
  parseFlags,
  parseHostPort,
} from "./lib/config/mod.ts";
import { hostname } from "node:os";
import { installSsh2Fixes } from "./lib/tunnel/mod.ts";
import { applyLabelEdits, parseLabelEdit } from "./lib/registry/mod.ts";
import { defaultCacheDir, execCredential, idToken } from "./lib/client/mod.ts";
import { logger, setLogLevel } from "./lib/log/log.ts";
import {
  addCluster,
  addUser,
  allowAccess,
  defaultClientCertTtl,
  defaultUdpFlowCaps,
  type IssuedToken,
  labelCluster,
  type LbConfig,
  listClusters,
  oidcConfigs,
  oidcKubeconfig,
  openStorage,
  parseForward,
  parseRegistryKind,
  removeCluster,
  removeUser,
  revokeUserCerts,
  rotateToken,
  setCertTtls,
  startHub,
  userKubeconfig,
} from "./lib/server/mod.ts";
import { isPeerAddress } from "./lib/registry/mod.ts";
import type { HubStorage } from "./lib/server/hub_storage.ts";
import { exportRegistry, importRegistry } from "./lib/server/registry_transfer.ts";
import {
  credentialsFromKubeconfig,
  parseServiceRef,
  startServiceForward,
} from "./lib/server/service_forward.ts";

const usage = `Tower hub

Usage:
  main_server.ts serve [flags]               run the hub
  main_server.ts fingerprint                 print the hub's SSH host key fingerprint
  main_server.ts cluster add NAME [--token-file FILE] [--hub-url wss://HOST:PORT/tunnel] [--mode impersonate|passthrough]
                        [--port P] [--label KEY=VALUE]…   (--token-file: the token goes to FILE, mode 0600, not the screen)
  main_server.ts cluster list
  main_server.ts cluster label NAME KEY=VALUE|KEY-…   set or remove labels (access rules select by them)
  main_server.ts cluster remove NAME
  main_server.ts cluster rotate-token NAME [--token-file FILE]
  main_server.ts user add NAME [--group G]… [--extra KEY=VALUE]… [--token]
                        add a hub user (--token: print a bearer token; --extra: sent as Impersonate-Extra-KEY)
  main_server.ts user list | remove NAME
  main_server.ts user revoke-certs NAME     every client certificate issued to NAME so far stops working
  main_server.ts access allow [--user U]… [--group G]… [--clusters GLOB[,GLOB]] [--cluster-selector SELECTOR]
                        clusters by name glob and/or Kubernetes label selector ('env in (prod,staging),!legacy')
  main_server.ts access list
  main_server.ts kubeconfig --user NAME [--server https://HOST:PORT] [--ttl DURATION]
                        kubeconfig with a fresh client certificate valid for --ttl (default and maximum: settings)
  main_server.ts settings [--client-cert-ttl DURATION] [--client-cert-max-ttl DURATION]
                        show or change hub settings (client certificate lifetime default 8h, maximum 8h)
  main_server.ts kubeconfig --oidc --oidc-issuer URL --oidc-client-id ID [--oidc-ca-file F] [--group G]…
                        [--oidc-flow browser|device] [--cache-dir DIR] [--server https://HOST:PORT]
                        kubeconfig whose user logs in with single sign-on (runs 'login'; contexts for the
                        clusters the groups may reach, or all)
  main_server.ts login --issuer URL --client-id ID [--ca-file F] [--cache-dir DIR] [--flow browser|device]
                        kubectl exec credential plugin: prints an ExecCredential with an ID token
  main_server.ts forward --kubeconfig FILE CLUSTER/NAMESPACE/SERVICE:PORT [HOST:]LOCAL_PORT
                                             forward a local port to a Service port through the hub
  main_server.ts registry export             print the whole registry as YAML (token hashes only)
  main_server.ts registry import FILE|- [--replace]   load an export into this registry

Common flags:
  --data-dir DIR       registry, keys and certificates (default: $TOWER_DATA_DIR or ./.tower)
  --registry file|kubernetes   where clusters, users, access rules and hub keys live (default file: the
                       data dir; kubernetes: custom resources and Secrets in a host cluster)
  --kubeconfig FILE    the host cluster (default: the pod's ServiceAccount when run in a cluster)
  --namespace NS       the host cluster namespace (default: the kubeconfig's or pod's, else tower-system)

serve flags:
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
                       (each of these is given once, or once per --oidc-issuer in the same order)
`;

/** The text of a file named by a flag, or a ConfigError that says which flag and why. */
async function readFlagFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`${flag} ${path}: ${(e as Error).message}`);
  }
}

function dataDirOf(flag: unknown): string {
  return typeof flag === "string" ? flag : Deno.env.get("TOWER_DATA_DIR") ?? "./.tower";
}

/** Flags every command takes to find the hub's storage. */
const storageFlags = {
  "data-dir": { type: "string" },
  registry: { type: "string" },
  kubeconfig: { type: "string" },
  namespace: { type: "string" },
} as const;

/** Opens the storage the flags name (the pod's ServiceAccount and env for an in-cluster hub). */
function storageOf(values: Record<string, unknown>): Promise<HubStorage> {
  return openStorage({
    registry: parseRegistryKind(values.registry),
    dataDir: dataDirOf(values["data-dir"]),
    host: {
      kubeconfig: values.kubeconfig as string | undefined,
      namespace: values.namespace as string | undefined,
      saDir: Deno.env.get("TOWER_SA_DIR"),
      serviceHost: Deno.env.get("KUBERNETES_SERVICE_HOST"),
      servicePort: Deno.env.get("KUBERNETES_SERVICE_PORT"),
    },
    log: logger({ component: "hub" }),
  });
}

function printIssued(t: IssuedToken, what: string): void {
  const facts = `Hub: ${t.hubUrl}    fingerprint: ${t.fingerprint}    CA: ${t.caFile}` +
    (t.caHint ? `\n  (${t.caHint})` : "");
  if (t.tokenFile) {
    // The token stays off the terminal (and out of scrollback and logs): only the file has it.
    return console.log(`${what} '${t.cluster}'.

Join token written to ${t.tokenFile} (mode 0600; the hub keeps only its hash).

${facts}

Run an agent by hand:
  ${t.agentCommand}

Or deploy it into the cluster: apply this (kubectl apply -f -), then make its Secret from the file:
  kubectl -n tower-system create secret generic tower-agent --from-file=token=${t.tokenFile} --from-file=hub-ca.crt=${t.caFile}
---
${t.manifest}`);
  }
  console.log(`${what} '${t.cluster}'.

Join token (shown once; the hub keeps only its hash):
  ${t.token}

${facts}

Run an agent by hand, with the token in a file only you can read (--token-file FILE writes one):
  ${t.agentCommand}
or with the token in the environment (it lands in shell history):
  ${t.agentEnvCommand}

Or deploy it into the cluster (kubectl apply -f -):
---
${t.manifest}`);
}

function flowCap(values: Record<string, unknown>, which: "per-port" | "per-source" | "per-cluster"): number {
  const flag = `lb-udp-flows-${which}`;
  const raw = values[flag];
  if (raw === undefined) {
    return defaultUdpFlowCaps[
      ({ "per-port": "perPort", "per-source": "perSource", "per-cluster": "perCluster" } as const)[which]
    ];
  }
  const n = Number(raw);
  if (!/^\d{1,6}$/.test(String(raw)) || n < 1) {
    throw new ConfigError(`--${flag} '${raw}' must be a whole number from 1`);
  }
  return n;
}

function lbConfig(values: Record<string, unknown>): LbConfig | undefined {
  if (values["lb-ports"] === undefined) {
    if (values["lb-address"] !== undefined) throw new ConfigError("--lb-address needs --lb-ports");
    return undefined;
  }
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(String(values["lb-ports"]));
  const [lo, hi] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (!m || lo < 1 || hi > 65535 || lo > hi) {
    throw new ConfigError(`--lb-ports '${values["lb-ports"]}' must be LO-HI with 1 <= LO <= HI <= 65535`);
  }
  return {
    portRange: [lo, hi],
    publicAddress: String(values["lb-address"] ?? hostname()),
    bindHost: String(values["lb-bind"]),
    udpIdleMs: parseDuration(String(values["lb-udp-idle"]), "--lb-udp-idle"),
    udpFlowCaps: {
      perPort: flowCap(values, "per-port"),
      perSource: flowCap(values, "per-source"),
      perCluster: flowCap(values, "per-cluster"),
    },
  };
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    ...storageFlags,
    listen: { type: "string", default: "0.0.0.0:8443" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "plain-http": { type: "boolean", default: false },
    name: { type: "string", multiple: true, default: [] },
    forward: { type: "string", multiple: true, default: [] },
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
    "oidc-issuer": { type: "string", multiple: true, default: [] },
    "oidc-client-id": { type: "string", multiple: true, default: [] },
    "oidc-ca-file": { type: "string", multiple: true, default: [] },
    "oidc-username-claim": { type: "string", multiple: true, default: [] },
    "oidc-groups-claim": { type: "string", multiple: true, default: [] },
    "oidc-username-prefix": { type: "string", multiple: true, default: [] },
    "oidc-groups-prefix": { type: "string", multiple: true, default: [] },
    "admin-group": { type: "string" },
    "metrics-listen": { type: "string" },
    "no-request-metrics": { type: "boolean", default: false },
  });
  const oidc = oidcConfigs({
    issuers: values["oidc-issuer"] as string[],
    clientIds: values["oidc-client-id"] as string[],
    caPems: await Promise.all(
      (values["oidc-ca-file"] as string[]).map((f) => readFlagFile(f, "--oidc-ca-file")),
    ),
    usernameClaims: values["oidc-username-claim"] as string[],
    groupsClaims: values["oidc-groups-claim"] as string[],
    usernamePrefixes: values["oidc-username-prefix"] as string[],
    groupsPrefixes: values["oidc-groups-prefix"] as string[],
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
  const drainTimeoutMs = parseDuration(String(values["drain-timeout"]), "--drain-timeout");
  const replicaId = String(values["replica-id"] ?? newReplicaId(hostname()));
  if (!isReplicaId(replicaId)) throw new ConfigError(`--replica-id '${replicaId}' is not a DNS label`);
  const peerListen = values["peer-listen"] === undefined
    ? undefined
    : parseHostPort(String(values["peer-listen"]), "--peer-listen");
  const advertise = values["peer-advertise"] as string | undefined;
  if (advertise !== undefined && (!peerListen || !isPeerAddress(advertise))) {
    throw new ConfigError(`--peer-advertise '${advertise}' must be HOST:PORT, with --peer-listen`);
  }
  const log = logger({ component: "hub", replica: replicaId });
  installSsh2Fixes();
  const hub = await startHub({
    oidc,
    storage: await storageOf(values),
    replicaId,
    peer: peerListen && { ...peerListen, advertise },
    host,
    port,
    tls: values["plain-http"]
      ? { mode: "plain" }
      : certFile && keyFile
      ? { mode: "files", certFile, keyFile }
      : { mode: "self-signed", names: values.name as string[] },
    forwards: (values.forward as string[]).map(parseForward),
    keepaliveMs: parseDuration(String(values.keepalive), "--keepalive"),
    auditLog: String(values["audit-log"]),
    lb: lbConfig(values),
    handshakeTimeoutMs: parseDuration(String(values["login-timeout"]), "--login-timeout"),
    adminGroup: values["admin-group"] as string | undefined,
    requestMetrics: values["no-request-metrics"] !== true,
    metricsListen: values["metrics-listen"] === undefined
      ? undefined
      : parseHostPort(String(values["metrics-listen"]), "--metrics-listen"),
    log,
  });
  log.info("hub listening", {
    listen: `${host}:${hub.port}`,
    tls: !values["plain-http"],
    registry: parseRegistryKind(values.registry),
    fingerprint: hub.fingerprint,
    clusters: hub.registry().clusters.length,
  });
  let stopping = false;
  const stop = async (signal: string) => {
    // A second signal during a drain stops at once.
    const drainFirst = signal === "SIGTERM" && !stopping;
    stopping = true;
    log.info("hub stopping", { signal, drain: drainFirst });
    if (drainFirst) await hub.drain(drainTimeoutMs);
    await hub.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
}

async function cluster(args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseFlags(rest, {
    ...storageFlags,
    "hub-url": { type: "string" },
    "token-file": { type: "string" },
    mode: { type: "string" },
    port: { type: "string" },
    label: { type: "string", multiple: true, default: [] },
  });
  await using storage = await storageOf(values);
  const name = positionals[0];
  const needName = () => {
    if (!name || positionals.length > 1) throw new ConfigError(`cluster ${verb} takes exactly one NAME`);
    return name;
  };
  const showLabels = (labels: Record<string, string>) =>
    Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",") || "-";
  switch (verb) {
    case "add": {
      const mode = values.mode as string | undefined;
      if (mode !== undefined && mode !== "impersonate" && mode !== "passthrough") {
        throw new ConfigError(`--mode '${mode}' must be impersonate or passthrough`);
      }
      const port = values.port === undefined ? undefined : Number(values.port);
      if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536)) {
        throw new ConfigError(`--port '${values.port}' is not a TCP port`);
      }
      const edits = (values.label as string[]).map((l) => parseLabelEdit(l, false));
      const issued = await addCluster(storage, needName(), {
        hubUrl: values["hub-url"] as string | undefined,
        mode,
        port,
        labels: applyLabelEdits({}, edits),
        tokenFile: values["token-file"] as string | undefined,
      });
      return printIssued(issued, "Added cluster");
    }
    case "rotate-token":
      return printIssued(
        await rotateToken(storage, needName(), values["token-file"] as string | undefined),
        "New token for cluster",
      );
    case "label": {
      if (!name) throw new ConfigError("cluster label takes NAME and then KEY=VALUE or KEY- edits");
      const labels = await labelCluster(
        storage,
        name,
        positionals.slice(1).map((e) => parseLabelEdit(e, true)),
      );
      return console.log(`Cluster '${name}' labels: ${showLabels(labels)}`);
    }
    case "remove":
      await removeCluster(storage, needName());
      return console.log(`Removed cluster '${name}'; a running hub closes its sessions now.`);
    case "list": {
      const { hubRunning, rows } = await listClusters(storage);
      const table = [["NAME", "AGENTS", "SINCE", "BYTES-IN", "BYTES-OUT", "LABELS"]];
      for (const r of rows) {
        table.push([
          r.name,
          String(r.agents),
          r.since ?? "-",
          String(r.bytesIn),
          String(r.bytesOut),
          showLabels(r.labels),
        ]);
      }
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
      if (!hubRunning) console.log("(the hub is not running: no live sessions shown)");
      return;
    }
    default:
      throw new ConfigError(
        `unknown cluster command '${verb ?? ""}' (add, list, label, remove, rotate-token)`,
      );
  }
}

async function user(args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseFlags(rest, {
    ...storageFlags,
    group: { type: "string", multiple: true, default: [] },
    extra: { type: "string", multiple: true, default: [] },
    token: { type: "boolean", default: false },
    server: { type: "string" },
  });
  await using storage = await storageOf(values);
  const name = positionals[0];
  const needName = () => {
    if (!name || positionals.length > 1) throw new ConfigError(`user ${verb} takes exactly one NAME`);
    return name;
  };
  switch (verb) {
    case "add": {
      const extra: Record<string, string[]> = {};
      for (const kv of values.extra as string[]) {
        const eq = kv.indexOf("=");
        if (eq < 1) throw new ConfigError(`--extra takes KEY=VALUE, got '${kv}'`);
        (extra[kv.slice(0, eq)] ??= []).push(kv.slice(eq + 1));
      }
      const { token } = await addUser(
        storage,
        needName(),
        values.group as string[],
        values.token === true,
        extra,
      );
      if (token) {
        return console.log(
          `Added user '${name}'.\n\nBearer token (shown once; the hub keeps only its hash):\n  ${token}`,
        );
      }
      return console.log(
        `Added user '${name}'. Give them access (access allow --user ${name} --clusters GLOB), then a kubeconfig ` +
          `(kubeconfig --user ${name}).`,
      );
    }
    case "remove":
      await removeUser(storage, needName());
      return console.log(`Removed user '${name}'; their token and certificates no longer work.`);
    case "revoke-certs":
      await revokeUserCerts(storage, needName());
      return console.log(
        `Revoked every client certificate of user '${name}'; a new one: kubeconfig --user ${name}.`,
      );
    case "list": {
      const data = await storage.registry.read();
      for (const u of data.users) {
        console.log(
          `${u.name}\tgroups=${u.groups.join(",") || "-"}\t${u.tokenHash ? "token" : "certificate"}${
            u.extra
              ? `\textra=${Object.entries(u.extra).map(([k, v]) => `${k}=${v.join("|")}`).join(",")}`
              : ""
          }`,
        );
      }
      return;
    }
    default:
      throw new ConfigError(`unknown user command '${verb ?? ""}' (add, list, remove, revoke-certs)`);
  }
}

async function access(args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  const { values } = parseFlags(rest, {
    ...storageFlags,
    user: { type: "string", multiple: true, default: [] },
    group: { type: "string", multiple: true, default: [] },
    clusters: { type: "string" },
    "cluster-selector": { type: "string" },
  });
  await using storage = await storageOf(values);
  switch (verb) {
    case "allow": {
      const users = values.user as string[];
      const groups = values.group as string[];
      const clusters = String(values.clusters ?? "").split(",").map((c) => c.trim()).filter(Boolean);
      const selector = values["cluster-selector"] as string | undefined;
      await allowAccess(storage, {
        ...(clusters.length ? { clusters } : {}),
        ...(selector !== undefined ? { clusterSelector: selector } : {}),
        ...(users.length ? { users } : {}),
        ...(groups.length ? { groups } : {}),
      });
      const what = [
        ...(clusters.length ? [`clusters ${clusters.join(", ")}`] : []),
        ...(selector !== undefined ? [`clusters labelled '${selector}'`] : []),
      ].join(" and ");
      return console.log(
        `Allowed ${
          [...users.map((u) => `user ${u}`), ...groups.map((g) => `group ${g}`)].join(", ")
        } on ${what}.`,
      );
    }
    case "list":
      for (const r of (await storage.registry.read()).access) {
        console.log(
          `users=${r.users?.join(",") ?? "-"}\tgroups=${r.groups?.join(",") ?? "-"}\tclusters=${
            r.clusters?.join(",") ?? "-"
          }\tselector=${r.clusterSelector ?? "-"}`,
        );
      }
      return;
    default:
      throw new ConfigError(`unknown access command '${verb ?? ""}' (allow, list)`);
  }
}

/** `login`: a kubectl exec credential plugin that prints an ExecCredential with an OIDC ID token. */
async function login(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    issuer: { type: "string" },
    "client-id": { type: "string" },
    "ca-file": { type: "string" },
    "cache-dir": { type: "string" },
    flow: { type: "string", default: "browser" },
    scope: { type: "string" },
  });
  const issuer = values.issuer as string | undefined;
  const clientId = values["client-id"] as string | undefined;
  if (!issuer || !clientId) throw new ConfigError("login needs --issuer URL --client-id ID");
  const flow = String(values.flow);
  if (flow !== "browser" && flow !== "device") {
    throw new ConfigError(`--flow '${flow}' must be browser or device`);
  }
  const caFile = values["ca-file"] as string | undefined;
  const token = await idToken({
    issuer,
    clientId,
    ...(caFile ? { caPem: await readFlagFile(caFile, "--ca-file") } : {}),
    cacheDir: String(values["cache-dir"] ?? defaultCacheDir(Deno.env)),
    flow,
    ...(values.scope ? { scopes: String(values.scope) } : {}),
    tell: (line) => console.error(line),
  });
  console.log(execCredential(token.idToken, token.expiresAt));
}

async function registryCommand(args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseFlags(rest, {
    ...storageFlags,
    replace: { type: "boolean", default: false },
  });
  switch (verb) {
    case "export": {
      await using storage = await storageOf(values);
      return console.log((await exportRegistry(storage)).trimEnd());
    }
    case "import": {
      const from = positionals[0];
      if (!from || positionals.length > 1) {
        throw new ConfigError("registry import takes one FILE (or - for stdin)");
      }
      let text: string;
      try {
        text = from === "-" ? await new Response(Deno.stdin.readable).text() : await Deno.readTextFile(from);
      } catch (e) {
        throw new ConfigError(`registry import ${from}: ${(e as Error).message}`);
      }
      await using storage = await storageOf(values);
      const n = await importRegistry(storage, text, values.replace === true);
      return console.log(
        `Imported ${n.clusters} clusters, ${n.users} users, ${n.access} access rules, ${n.loadBalancers} ` +
          "LoadBalancer ports.",
      );
    }
    default:
      throw new ConfigError(`unknown registry command '${verb ?? ""}' (export, import)`);
  }
}

async function forward(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    kubeconfig: { type: "string" },
    "log-level": { type: "string", default: "info" },
  });
  if (positionals.length !== 2 || !values.kubeconfig) {
    throw new ConfigError(
      "usage: forward --kubeconfig FILE CLUSTER/NAMESPACE/SERVICE:PORT [HOST:]LOCAL_PORT",
    );
  }
  const ref = parseServiceRef(positionals[0]!);
  const listen = parseHostPort(positionals[1]!, "local port", "127.0.0.1");
  let text: string;
  try {
    text = await Deno.readTextFile(String(values.kubeconfig));
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new ConfigError(
        `--kubeconfig ${values.kubeconfig}: this permission set may not read it; forward runs on a ` +
          "user's machine with the client set (deno task forward …, or deno run -P=client main_server.ts forward …)",
      );
    }
    throw new ConfigError(`--kubeconfig ${values.kubeconfig}: ${(e as Error).message}`);
  }
  const target = { ...ref, ...credentialsFromKubeconfig(text, ref.cluster) };
  const log = logger({ component: "forward" });
  const fwd = await startServiceForward(
    target,
    listen.host,
    listen.port,
    log,
  );
  log.info("forwarding", { listen: `${listen.host}:${fwd.port}`, to: positionals[0] });
  const stop = async () => {
    await fwd.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => void stop());
  Deno.addSignalListener("SIGTERM", () => void stop());
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return await serve(rest);
    case "fingerprint": {
      const { values } = parseFlags(rest, storageFlags);
      await using storage = await storageOf(values);
      return console.log((await storage.material.hostKey()).fingerprint);
    }
    case "cluster":
      return await cluster(rest);
    case "user":
      return await user(rest);
    case "access":
      return await access(rest);
    case "forward":
      return await forward(rest);
    case "login":
      return await login(rest);
    case "kubeconfig": {
      const { values } = parseFlags(rest, {
        ...storageFlags,
        user: { type: "string" },
        server: { type: "string" },
        ttl: { type: "string" },
        oidc: { type: "boolean", default: false },
        "oidc-issuer": { type: "string" },
        "oidc-client-id": { type: "string" },
        "oidc-ca-file": { type: "string" },
        "oidc-flow": { type: "string", default: "browser" },
        group: { type: "string", multiple: true, default: [] },
        "cache-dir": { type: "string" },
      });
      await using storage = await storageOf(values);
      if (values.oidc) {
        if (values.user || values.ttl) throw new ConfigError("kubeconfig --oidc takes no --user or --ttl");
        const issuer = values["oidc-issuer"] as string | undefined;
        const clientId = values["oidc-client-id"] as string | undefined;
        if (!issuer || !clientId) {
          throw new ConfigError("kubeconfig --oidc needs --oidc-issuer URL --oidc-client-id ID");
        }
        const flow = String(values["oidc-flow"]);
        if (flow !== "browser" && flow !== "device") {
          throw new ConfigError(`--oidc-flow '${flow}' must be browser or device`);
        }
        return console.log(
          await oidcKubeconfig(storage, {
            issuer,
            clientId,
            caFile: values["oidc-ca-file"] as string | undefined,
            groups: values.group as string[],
            server: values.server as string | undefined,
            cacheDir: String(values["cache-dir"] ?? defaultCacheDir(Deno.env)),
            flow,
          }),
        );
      }
      if (!values.user) throw new ConfigError("kubeconfig needs --user NAME (or --oidc)");
      return console.log(
        await userKubeconfig(
          storage,
          String(values.user),
          values.server as string | undefined,
          values.ttl as string | undefined,
        ),
      );
    }
    case "registry":
      return await registryCommand(rest);
    case "settings": {
      const { values } = parseFlags(rest, {
        ...storageFlags,
        "client-cert-ttl": { type: "string" },
        "client-cert-max-ttl": { type: "string" },
      });
      await using storage = await storageOf(values);
      const s = await setCertTtls(
        storage,
        values["client-cert-ttl"] as string | undefined,
        values["client-cert-max-ttl"] as string | undefined,
      );
      return console.log(
        `public URL: ${s.publicUrl ?? "-"}\nclient certificate lifetime: ${
          s.clientCertTtl ?? defaultClientCertTtl
        } (maximum ${s.clientCertMaxTtl ?? defaultClientCertTtl})`,
      );
    }
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
