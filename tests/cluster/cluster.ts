/**
 * Real Kubernetes test clusters for Tower's tests: etcd 3.6 + kube-apiserver + kwok (a fake kubelet
 * that really runs exec, serves logs from a CRI-format file and dials real servers for port-forward),
 * each cluster in its own network namespace so nothing in the root namespace — in particular a hub
 * under test — can reach its apiserver except through an agent running inside the namespace.
 *
 * ```ts
 * const [a, b] = await startClusters(["cluster-a", "cluster-b"]);
 * try {
 *   const r = await a.kubectl(["get", "ns"]);
 *   const creds = await a.agentCredentials();
 *   const agent = a.spawnInNetns(["deno", "run", "-A", "main_agent.ts", "--hub", `wss://${a.hubAddress}:8443`, …],
 *     { env: creds.env });
 * } finally {
 *   await Promise.all([a.stop(), b.stop()]);
 * }
 * ```
 *
 * Needs root (network namespaces). Binaries come from {@linkcode findBinaries}.
 *
 * @module
 */

import { stringify as toYaml } from "yaml";
import { type ClusterBinaries, findBinaries, findKwokStages } from "./bins.ts";
import { writeClusterPki } from "./_pki.ts";
import { type CommandOutput, commandOutput } from "./command_output.ts";
import {
  allocateNamingLocked,
  checkHost,
  createNetnsLocked,
  destroyNetns,
  ipTool,
  type Netns,
  type Reaped,
  reapLeftoversLocked,
  withHarnessLock,
} from "./_netns.ts";

export { STATE_ROOT } from "./_netns.ts";
export type { Reaped } from "./_netns.ts";

/** The apiserver's port on the namespace's loopback (fixed: every cluster has its own namespace). */
export const APISERVER_PORT = 6443;
const ETCD_PORT = 2379;
const KWOK_PORT = 10250;
/** The agent's RBAC as deployed to real clusters; the harness applies exactly this file. */
export const AGENT_RBAC_FILE: string = new URL("../../deploy/agent/rbac.yaml", import.meta.url).pathname;
/** Namespace and ServiceAccount of the agent, as in {@linkcode AGENT_RBAC_FILE}. */
export const AGENT_NAMESPACE = "tower-system";
/** ServiceAccount name of the agent, as in {@linkcode AGENT_RBAC_FILE}. */
export const AGENT_SERVICE_ACCOUNT = "tower-agent";

/** A user of the apiserver's static `--token-auth-file`. */
export interface StaticTokenUser {
  /** User name, e.g. "alice". */
  name: string;
  /** Groups the user is in, e.g. ["devs"]. */
  groups: string[];
}

/** Options of {@linkcode startClusters}. */
export interface StartClustersOptions {
  /** Binaries to run; default {@linkcode findBinaries}(). */
  binaries?: ClusterBinaries;
  /** Name of the one fake node; default "node-1". */
  nodeName?: string;
  /**
   * Pod ports that port-forward reaches: a port-forward to pod port N (any pod) dials 127.0.0.1:N
   * inside the cluster's namespace. Default [8080, 8443, 9090].
   */
  forwardPorts?: number[];
  /**
   * Static-token users; each gets a random token in {@linkcode TestCluster.tokens}. Default: admin
   * (system:masters), alice (devs), bob (no groups).
   */
  users?: StaticTokenUser[];
  /** Upper bound for starting one cluster; default 90 s. */
  startTimeoutMs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** Result of {@linkcode TestCluster.kubectl}: exit code and what it printed. */
export type KubectlResult = CommandOutput;

/** Options of {@linkcode TestCluster.kubectl}. */
export interface KubectlOptions {
  /** Written to kubectl's stdin, which is then closed. */
  stdin?: string | Uint8Array;
  /** Extra environment variables (e.g. KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false). */
  env?: Record<string, string>;
  /** Kill kubectl after this long; default 60 s. */
  timeoutMs?: number;
  /** Authenticate with this bearer token instead of the admin client cert. */
  token?: string;
}

/** Options of {@linkcode TestCluster.spawnInNetns}; like Deno.CommandOptions. */
export interface SpawnOptions {
  /** Added to (or, with clearEnv, replacing) the harness's environment. */
  env?: Record<string, string>;
  clearEnv?: boolean;
  cwd?: string;
  /** Default "null". */
  stdin?: "piped" | "inherit" | "null";
  /** Default "inherit". Piped streams must be consumed or cancelled by the caller. */
  stdout?: "piped" | "inherit" | "null";
  /** Default "inherit". */
  stderr?: "piped" | "inherit" | "null";
}

/** Options of {@linkcode TestCluster.spawnKubectl}. */
export interface SpawnKubectlOptions extends SpawnOptions {
  /** Authenticate with this bearer token instead of the admin client cert. */
  token?: string;
}

/** What an agent process needs to talk to its cluster as the `tower-agent` ServiceAccount. */
export interface AgentCredentials {
  /**
   * A stand-in for /var/run/secrets/kubernetes.io/serviceaccount: holds `token` (minted with the
   * TokenRequest API), `ca.crt` (the cluster CA) and `namespace`.
   */
  saDir: string;
  /** The ServiceAccount token itself. */
  token: string;
  /** In-cluster environment: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (the apiserver). */
  env: { KUBERNETES_SERVICE_HOST: string; KUBERNETES_SERVICE_PORT: string };
}

/** Options of {@linkcode TestCluster.createPod}. */
export interface CreatePodOptions {
  /** Default "default". The namespace must exist. */
  namespace?: string;
  /** Container ports to declare (documentation only; port-forward follows forwardPorts). */
  ports?: number[];
  /** Labels of the pod. */
  labels?: Record<string, string>;
}

/** A running test cluster. All addresses except hubAddress/nsAddress are inside its namespace. */
export interface TestCluster {
  /** Cluster name as given, e.g. "cluster-a". */
  readonly name: string;
  /** Network namespace name (`tower-<owner pid>-<name>`); `ip netns exec <netns> …` runs inside. */
  readonly netns: string;
  /** Root-namespace side veth link (`tw<owner pid>h<n>`); the namespace side is `eth0`. */
  readonly vethName: string;
  /** Root-namespace side of the veth: where a server in the root namespace is reached from inside. */
  readonly hubAddress: string;
  /** Namespace side of the veth: where a server listening inside is reached from the root namespace. */
  readonly nsAddress: string;
  /** https://127.0.0.1:6443, valid only inside the namespace. */
  readonly apiserverUrl: string;
  /** The cluster's state dir under /tmp/tower; removed by stop(). */
  readonly dir: string;
  /** Cluster CA (PEM file); it signed the apiserver serving cert and the admin client cert. */
  readonly caFile: string;
  /** Kubeconfig of the admin (client cert, group system:masters), usable inside the namespace. */
  readonly adminKubeconfig: string;
  /** Static bearer tokens by user name (see {@linkcode StartClustersOptions.users}). */
  readonly tokens: Readonly<Record<string, string>>;
  /** Name of the kwok fake node that pods must be placed on (`spec.nodeName`). */
  readonly nodeName: string;
  /** CRI-format file that `kubectl logs`/attach of every pod reads; see appendPodLog. */
  readonly podLogFile: string;
  /** Pod ports whose port-forward dials 127.0.0.1:<same port> inside the namespace. */
  readonly forwardPorts: readonly number[];
  /** Paths of the binaries, e.g. kubectl for tests that run it themselves. */
  readonly binaries: ClusterBinaries;
  /** Milliseconds from start to apiserver ready and node Ready. */
  readonly startupMs: number;

  /**
   * Runs kubectl inside the namespace, as admin unless `opts.token` is given. Never throws for a
   * non-zero exit; check `code`.
   */
  kubectl(args: string[], opts?: KubectlOptions): Promise<KubectlResult>;
  /** Starts a long-running kubectl (port-forward, logs -f, watch) inside the namespace. */
  spawnKubectl(args: string[], opts?: SpawnKubectlOptions): Deno.ChildProcess;
  /** Runs any process inside the namespace; it is killed (if still running) by stop(). */
  spawnInNetns(cmd: string[], opts?: SpawnOptions): Deno.ChildProcess;
  /**
   * Applies deploy/agent/rbac.yaml, mints a token for the tower-agent ServiceAccount with the
   * TokenRequest API and writes a serviceaccount dir for an agent process run with spawnInNetns.
   */
  agentCredentials(opts?: { durationSeconds?: number }): Promise<AgentCredentials>;
  /** Creates a pod on the fake node and waits until it is Ready. */
  createPod(name: string, opts?: CreatePodOptions): Promise<void>;
  /** Appends a line to {@linkcode podLogFile} in CRI format (what `kubectl logs` then shows). */
  appendPodLog(line: string, stream?: "stdout" | "stderr"): Promise<void>;
  /** Kills every process in the namespace and removes the namespace, veth and dir. Idempotent. */
  stop(): Promise<void>;
}

const DEFAULT_USERS: StaticTokenUser[] = [
  { name: "admin", groups: ["system:masters"] },
  { name: "alice", groups: ["devs"] },
  { name: "bob", groups: [] },
];
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function randomToken(): string {
  const b = crypto.getRandomValues(new Uint8Array(24));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function tail(file: string, lines = 30): Promise<string> {
  try {
    return (await Deno.readTextFile(file)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Removes namespaces, veth links and dirs left behind by harness processes that no longer exist
 * (killed with SIGKILL, crashed). {@linkcode startClusters} does this itself before starting.
 */
export async function reapLeftovers(): Promise<Reaped> {
  await checkHost();
  return await withHarnessLock(reapLeftoversLocked);
}

/** Starts one cluster per name, in parallel. On any failure, the ones started are stopped again. */
export async function startClusters(
  names: string[],
  opts: StartClustersOptions = {},
): Promise<TestCluster[]> {
  for (const n of names) {
    if (!DNS_LABEL.test(n) || n.length > 40) {
      throw new Error(`cluster name '${n}' is not a DNS label of ≤ 40 chars`);
    }
  }
  if (new Set(names).size !== names.length) throw new Error(`duplicate cluster names in ${names.join(",")}`);
  await checkHost();
  const binaries = opts.binaries ?? await findBinaries();
  const stages = await findKwokStages();
  const ipBin = await ipTool();
  const prepared: ClusterProcessGroup[] = [];
  await withHarnessLock(async () => {
    const reaped = await reapLeftoversLocked();
    if (reaped.netns.length + reaped.veths.length + reaped.dirs.length > 0) {
      opts.log?.(`reaped leftovers of dead harness processes: ${JSON.stringify(reaped)}`);
    }
    try {
      for (const name of names) {
        const naming = await allocateNamingLocked(name);
        const net = await createNetnsLocked(naming.netns, naming.vethRoot);
        await Deno.remove(naming.dir, { recursive: true }).catch(() => {});
        prepared.push(new ClusterProcessGroup(name, net, naming.dir, binaries, ipBin));
      }
    } catch (e) {
      await Promise.allSettled(prepared.map((c) => c.stop()));
      throw e;
    }
  });
  const results = await Promise.allSettled(prepared.map((c) => c.start(stages, opts)));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length > 0) {
    await Promise.allSettled(prepared.map((c) => c.stop()));
    throw failed.length === 1
      ? failed[0]!.reason
      : new AggregateError(failed.map((f) => f.reason), "clusters failed to start");
  }
  return prepared;
}

/** Starts one cluster; see {@linkcode startClusters}. */
export async function startCluster(name: string, opts: StartClustersOptions = {}): Promise<TestCluster> {
  const [c] = await startClusters([name], opts);
  return c!;
}

class ClusterProcessGroup implements TestCluster {
  readonly netns: string;
  readonly hubAddress: string;
  readonly nsAddress: string;
  readonly apiserverUrl = `https://127.0.0.1:${APISERVER_PORT}`;
  readonly caFile: string;
  readonly adminKubeconfig: string;
  readonly podLogFile: string;
  tokens: Record<string, string> = {};
  nodeName = "node-1";
  forwardPorts: number[] = [8080, 8443, 9090];
  startupMs = 0;
  readonly vethName: string;
  readonly #ip: string;
  readonly #children = new Set<Deno.ChildProcess>();
  readonly #daemons = new Map<
    string,
    { child: Deno.ChildProcess; log: string; exited?: Deno.CommandStatus }
  >();
  #stopping: Promise<void> | undefined;

  constructor(
    readonly name: string,
    net: Netns,
    readonly dir: string,
    readonly binaries: ClusterBinaries,
    ipBin: string,
  ) {
    this.#ip = ipBin;
    this.netns = net.name;
    this.hubAddress = net.hubAddress;
    this.nsAddress = net.nsAddress;
    this.vethName = net.vethRoot;
    this.caFile = `${dir}/ca.crt`;
    this.adminKubeconfig = `${dir}/admin.kubeconfig`;
    this.podLogFile = `${dir}/pod.log`;
  }

  async start(stages: string, opts: StartClustersOptions): Promise<void> {
    const t0 = Date.now();
    const log = (s: string) => opts.log?.(`[${this.name} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);
    this.nodeName = opts.nodeName ?? this.nodeName;
    this.forwardPorts = opts.forwardPorts ?? this.forwardPorts;
    const timeoutMs = opts.startTimeoutMs ?? 90_000;
    const deadline = t0 + timeoutMs;
    const d = this.dir;
    await Deno.mkdir(`${d}/etcd`, { recursive: true, mode: 0o700 });
    await Deno.chmod(d, 0o755);

    // Every Go process gets one OS thread for Go code and a soft memory cap: two clusters (~400 MB RSS
    // each) plus a hub and agents then fit a 2-core CI runner, and a cluster still starts in ~3-4 s.
    this.#spawnDaemon("etcd", [
      this.binaries.etcd,
      `--name=${this.name}`,
      `--data-dir=${d}/etcd`,
      `--listen-client-urls=http://127.0.0.1:${ETCD_PORT}`,
      `--advertise-client-urls=http://127.0.0.1:${ETCD_PORT}`,
      `--listen-peer-urls=http://127.0.0.1:${ETCD_PORT + 1}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${ETCD_PORT + 1}`,
      `--initial-cluster=${this.name}=http://127.0.0.1:${ETCD_PORT + 1}`,
      "--unsafe-no-fsync",
      "--quota-backend-bytes=268435456",
      "--log-level=warn",
    ], { GOMAXPROCS: "1", GOMEMLIMIT: "256MiB" });

    const pki = await writeClusterPki(d, this.name);
    const users = opts.users ?? DEFAULT_USERS;
    this.tokens = Object.fromEntries(users.map((u) => [u.name, randomToken()]));
    // token,user,uid,"group1,group2"
    await Deno.writeTextFile(
      `${d}/tokens.csv`,
      users.map((u, i) => `${this.tokens[u.name]},${u.name},uid-${i + 1},"${u.groups.join(",")}"`).join(
        "\n",
      ) + "\n",
      { mode: 0o600 },
    );
    await Deno.writeTextFile(
      this.adminKubeconfig,
      toYaml(this.#kubeconfig({
        "client-certificate": pki.adminCert,
        "client-key": pki.adminKey,
      })),
    );
    await Deno.writeTextFile(this.#tokenKubeconfig, toYaml(this.#kubeconfig({})));
    await Deno.writeTextFile(
      this.podLogFile,
      `${new Date().toISOString()} stdout F hello from ${this.name}\n`,
    );
    await Deno.writeTextFile(`${d}/kwok.yaml`, await this.#kwokConfig(stages));

    this.#spawnDaemon("kube-apiserver", [
      this.binaries.kubeApiserver,
      `--etcd-servers=http://127.0.0.1:${ETCD_PORT}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${APISERVER_PORT}`,
      `--cert-dir=${d}/apiserver-certs`,
      `--tls-cert-file=${pki.serverCert}`,
      `--tls-private-key-file=${pki.serverKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--token-auth-file=${d}/tokens.csv`,
      "--authorization-mode=RBAC",
      "--allow-privileged=true",
      "--service-cluster-ip-range=10.96.0.0/16",
      `--service-account-issuer=${this.apiserverUrl}`,
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      // No kube-controller-manager runs, so nothing would create the ServiceAccounts it expects.
      "--disable-admission-plugins=ServiceAccount",
      "--endpoint-reconciler-type=none",
      "--kubelet-preferred-address-types=InternalIP,Hostname",
      "--profiling=false",
    ], { GOMAXPROCS: "1", GOMEMLIMIT: "768MiB" });

    log("waiting for /readyz");
    await this.#until(deadline, "apiserver /readyz", async () => {
      const r = await this.kubectl(["get", "--raw=/readyz"], { timeoutMs: 5_000 });
      return r.code === 0 && r.stdout.trim() === "ok";
    });
    log("apiserver ready");

    this.#spawnDaemon("kwok", [
      this.binaries.kwok,
      `--kubeconfig=${this.adminKubeconfig}`,
      `--config=${d}/kwok.yaml`,
      "--manage-all-nodes=true",
      "--node-ip=127.0.0.1",
      `--node-name=${this.nodeName}`,
      `--node-port=${KWOK_PORT}`,
      `--server-address=127.0.0.1:${KWOK_PORT}`,
      "--cidr=10.244.0.0/16",
    ], { GOMAXPROCS: "1", GOMEMLIMIT: "256MiB", HOME: d });
    const node = {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name: this.nodeName,
        labels: { "kubernetes.io/hostname": this.nodeName, "kubernetes.io/os": "linux", type: "kwok" },
        annotations: { "kwok.x-k8s.io/node": "fake" },
      },
    };
    await this.#mustKubectl(["apply", "-f", "-"], { stdin: JSON.stringify(node) });
    await this.#until(deadline, `node ${this.nodeName} Ready`, async () => {
      const r = await this.kubectl([
        "get",
        "node",
        this.nodeName,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
      ], { timeoutMs: 5_000 });
      return r.code === 0 && r.stdout.trim() === "True";
    });
    this.startupMs = Date.now() - t0;
    log(`ready in ${this.startupMs} ms`);
  }

  get #tokenKubeconfig(): string {
    return `${this.dir}/no-user.kubeconfig`;
  }

  #kubeconfig(user: Record<string, string>): unknown {
    return {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{
        name: this.name,
        cluster: { server: this.apiserverUrl, "certificate-authority": this.caFile },
      }],
      users: [{ name: "admin", user }],
      contexts: [{ name: this.name, context: { cluster: this.name, user: "admin" } }],
      "current-context": this.name,
    };
  }

  async #kwokConfig(stages: string): Promise<string> {
    const stageFiles = [
      "node/fast/node-initialize.yaml",
      "pod/fast/pod-ready.yaml",
      "pod/fast/pod-complete.yaml",
      "pod/fast/pod-delete.yaml",
    ];
    const docs = await Promise.all(stageFiles.map((f) => Deno.readTextFile(`${stages}/${f}`)));
    const rule = (kind: string, name: string, spec: unknown) =>
      toYaml({ apiVersion: "kwok.x-k8s.io/v1alpha1", kind, metadata: { name }, spec });
    docs.push(
      // exec runs the real command inside the namespace, as kwok's user, in the cluster dir.
      rule("ClusterExec", "exec", { execs: [{ local: { workDir: this.dir } }] }),
      rule("ClusterLogs", "logs", { logs: [{ logsFile: this.podLogFile, follow: true }] }),
      rule("ClusterAttach", "attach", { attaches: [{ logsFile: this.podLogFile }] }),
      rule("ClusterPortForward", "port-forward", {
        forwards: this.forwardPorts.map((p) => ({ ports: [p], target: { address: "127.0.0.1", port: p } })),
      }),
    );
    return docs.map((doc) => doc.trim()).join("\n---\n") + "\n";
  }

  #spawnDaemon(name: string, cmd: string[], env: Record<string, string>): void {
    const log = `${this.dir}/${name}.log`;
    // The shell only redirects and then execs, so the child's pid is the daemon's.
    const child = this.spawnInNetns([
      "/bin/sh",
      "-c",
      'log=$1; shift; exec "$@" >>"$log" 2>&1',
      "sh",
      log,
      ...cmd,
    ], {
      env,
      stdout: "null",
      stderr: "null",
    });
    const entry: { child: Deno.ChildProcess; log: string; exited?: Deno.CommandStatus } = { child, log };
    this.#daemons.set(name, entry);
    child.status.then((s) => entry.exited = s);
  }

  async #until(deadline: number, what: string, ready: () => Promise<boolean>): Promise<void> {
    for (;;) {
      for (const [name, d] of this.#daemons) {
        if (d.exited) {
          throw new Error(
            `cluster ${this.name}: ${name} exited (code ${d.exited.code}) while waiting for ${what}; ` +
              `last lines of ${d.log}:\n${await tail(d.log)}`,
          );
        }
      }
      if (await ready()) return;
      if (Date.now() > deadline) {
        const logs = await Promise.all(
          [...this.#daemons].map(async ([n, d]) => `--- ${n} (${d.log}):\n${await tail(d.log, 15)}`),
        );
        throw new Error(`cluster ${this.name}: timed out waiting for ${what}\n${logs.join("\n")}`);
      }
      await delay(200);
    }
  }

  spawnInNetns(cmd: string[], opts: SpawnOptions = {}): Deno.ChildProcess {
    if (this.#stopping) throw new Error(`cluster ${this.name} is stopped`);
    const child = new Deno.Command(this.#ip, {
      args: ["netns", "exec", this.netns, ...cmd],
      env: opts.env,
      clearEnv: opts.clearEnv,
      cwd: opts.cwd,
      stdin: opts.stdin ?? "null",
      stdout: opts.stdout ?? "inherit",
      stderr: opts.stderr ?? "inherit",
    }).spawn();
    this.#children.add(child);
    child.status.finally(() => this.#children.delete(child));
    return child;
  }

  spawnKubectl(args: string[], opts: SpawnKubectlOptions = {}): Deno.ChildProcess {
    const auth = opts.token === undefined
      ? [`--kubeconfig=${this.adminKubeconfig}`]
      : [`--kubeconfig=${this.#tokenKubeconfig}`, `--token=${opts.token}`];
    return this.spawnInNetns([this.binaries.kubectl, ...auth, ...args], opts);
  }

  async kubectl(args: string[], opts: KubectlOptions = {}): Promise<KubectlResult> {
    const child = this.spawnKubectl(args, {
      token: opts.token,
      env: opts.env,
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    });
    return await commandOutput(child, { stdin: opts.stdin, timeoutMs: opts.timeoutMs ?? 60_000 });
  }

  async #mustKubectl(args: string[], opts: KubectlOptions = {}): Promise<string> {
    const r = await this.kubectl(args, opts);
    if (r.code !== 0) {
      throw new Error(`cluster ${this.name}: kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
    }
    return r.stdout;
  }

  async agentCredentials(opts: { durationSeconds?: number } = {}): Promise<AgentCredentials> {
    await this.#mustKubectl(["apply", "-f", AGENT_RBAC_FILE]);
    const token = (await this.#mustKubectl([
      "create",
      "token",
      AGENT_SERVICE_ACCOUNT,
      "-n",
      AGENT_NAMESPACE,
      `--duration=${opts.durationSeconds ?? 24 * 3600}s`,
    ])).trim();
    const saDir = `${this.dir}/agent-serviceaccount`;
    await Deno.mkdir(saDir, { recursive: true });
    await Deno.writeTextFile(`${saDir}/token`, token, { mode: 0o600 });
    await Deno.copyFile(this.caFile, `${saDir}/ca.crt`);
    await Deno.writeTextFile(`${saDir}/namespace`, AGENT_NAMESPACE);
    return {
      saDir,
      token,
      env: { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(APISERVER_PORT) },
    };
  }

  async createPod(name: string, opts: CreatePodOptions = {}): Promise<void> {
    const ns = opts.namespace ?? "default";
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: ns, labels: opts.labels ?? { app: name } },
      spec: {
        nodeName: this.nodeName,
        containers: [{
          name: "main",
          image: "fake.invalid/kwok-pod:latest",
          ports: (opts.ports ?? []).map((p) => ({ containerPort: p })),
        }],
      },
    };
    await this.#mustKubectl(["apply", "-f", "-"], { stdin: JSON.stringify(pod) });
    await this.#mustKubectl(["wait", "-n", ns, "--for=condition=Ready", `pod/${name}`, "--timeout=30s"], {
      timeoutMs: 35_000,
    });
  }

  async appendPodLog(line: string, stream: "stdout" | "stderr" = "stdout"): Promise<void> {
    await Deno.writeTextFile(this.podLogFile, `${new Date().toISOString()} ${stream} F ${line}\n`, {
      append: true,
    });
  }

  stop(): Promise<void> {
    return this.#stopping ??= this.#stop();
  }

  async #stop(): Promise<void> {
    // Everything runs inside the namespace; killing all of it also catches grandchildren (exec'd commands).
    for (const child of this.#children) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }
    await Promise.allSettled([...this.#children].map((c) => c.status));
    await destroyNetns(this.netns, this.vethName, this.dir);
  }
}
