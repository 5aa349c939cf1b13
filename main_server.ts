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
  parseFlags,
  parseHostPort,
  readFlagFile,
} from "./lib/config/mod.ts";
import { installSsh2Fixes } from "./lib/tunnel/mod.ts";
import { applyLabelEdits, parseLabelEdit } from "./lib/registry/mod.ts";
import { defaultCacheDir, execCredential, idToken } from "./lib/client/mod.ts";
import { logger, setLogLevel } from "./lib/log/log.ts";
import {
  addCluster,
  addUser,
  allowAccess,
  defaultClientCertTtl,
  type IssuedToken,
  labelCluster,
  listClusters,
  oidcKubeconfig,
  openStorage,
  removeCluster,
  removeUser,
  revokeUserCerts,
  rotateToken,
  setCertTtls,
  startHub,
  userKubeconfig,
} from "./lib/server/mod.ts";
import { type HubStorage, storageFlags, storageOptions } from "./lib/server/hub_storage.ts";
import { loadServeConfig, serveUsage } from "./lib/server/serve_config.ts";
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

${serveUsage}
`;

/** Opens the storage the flags name (the pod's ServiceAccount and env for an in-cluster hub). */
function storageOf(values: Parameters<typeof storageOptions>[0]): Promise<HubStorage> {
  return openStorage({
    ...storageOptions(values, (name) => Deno.env.get(name)),
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

async function serve(args: string[]): Promise<void> {
  const config = await loadServeConfig(args, (name) => Deno.env.get(name));
  setLogLevel(config.logLevel);
  const log = logger({ component: "hub", replica: config.hub.replicaId });
  installSsh2Fixes();
  const storage = await openStorage({ ...config.storage, log: logger({ component: "hub" }) });
  const hub = await startHub({ ...config.hub, storage, log });
  log.info("hub listening", {
    listen: `${config.hub.host}:${hub.port}`,
    tls: config.hub.tls.mode !== "plain",
    registry: config.storage.registry,
    fingerprint: hub.fingerprint,
    clusters: hub.registry().clusters.length,
  });
  let stopping = false;
  const stop = async (signal: string) => {
    // A second signal during a drain stops at once.
    const drainFirst = signal === "SIGTERM" && !stopping;
    stopping = true;
    log.info("hub stopping", { signal, drain: drainFirst });
    if (drainFirst) await hub.drain(config.drainTimeoutMs);
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
      const mode = values.mode;
      if (mode !== undefined && mode !== "impersonate" && mode !== "passthrough") {
        throw new ConfigError(`--mode '${mode}' must be impersonate or passthrough`);
      }
      const port = values.port === undefined ? undefined : Number(values.port);
      if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536)) {
        throw new ConfigError(`--port '${values.port}' is not a TCP port`);
      }
      const edits = values.label.map((l) => parseLabelEdit(l, false));
      const issued = await addCluster(storage, needName(), {
        hubUrl: values["hub-url"],
        mode,
        port,
        labels: applyLabelEdits({}, edits),
        tokenFile: values["token-file"],
      });
      return printIssued(issued, "Added cluster");
    }
    case "rotate-token":
      return printIssued(
        await rotateToken(storage, needName(), values["token-file"]),
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
      for (const kv of values.extra) {
        const eq = kv.indexOf("=");
        if (eq < 1) throw new ConfigError(`--extra takes KEY=VALUE, got '${kv}'`);
        (extra[kv.slice(0, eq)] ??= []).push(kv.slice(eq + 1));
      }
      const { token } = await addUser(
        storage,
        needName(),
        values.group,
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
      const users = values.user;
      const groups = values.group;
      const clusters = String(values.clusters ?? "").split(",").map((c) => c.trim()).filter(Boolean);
      const selector = values["cluster-selector"];
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
  const issuer = values.issuer;
  const clientId = values["client-id"];
  if (!issuer || !clientId) throw new ConfigError("login needs --issuer URL --client-id ID");
  const flow = String(values.flow);
  if (flow !== "browser" && flow !== "device") {
    throw new ConfigError(`--flow '${flow}' must be browser or device`);
  }
  const caFile = values["ca-file"];
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
        const issuer = values["oidc-issuer"];
        const clientId = values["oidc-client-id"];
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
            caFile: values["oidc-ca-file"],
            groups: values.group,
            server: values.server,
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
          values.server,
          values.ttl,
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
        values["client-cert-ttl"],
        values["client-cert-max-ttl"],
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
