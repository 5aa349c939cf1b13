/**
 * The hub's admin commands run as real processes with the server permission set: `cluster add`, `list`,
 * `remove`, `rotate-token`, `fingerprint`, offline and against a running hub with a connected agent.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { hashToken } from "../../lib/registry/mod.ts";
import {
  addCluster,
  type HubProcess,
  parseIssued,
  serverCommand,
  startAgent,
  startHub,
  type TowerProcess,
  withScratchDir,
} from "../helpers/tower_procs.ts";
import { waitForHubStatus } from "../helpers/hub_status.ts";
import { Buffer } from "node:buffer";
import { echoServer, freePort, patternChunk, roundTrip, type TestServer } from "../helpers/net_servers.ts";

/** Runs `cluster …` against `dataDir`. */
function cluster(dataDir: string, verb: string, ...args: string[]) {
  // The data dir goes first: after a `--` everything is a positional.
  return serverCommand(["cluster", verb, "--data-dir", dataDir, ...args]);
}

/** The registry file, parsed. */
async function registryFile(dataDir: string): Promise<{ text: string; data: Record<string, unknown> }> {
  const text = await Deno.readTextFile(join(dataDir, "registry.yaml"));
  return { text, data: YAML.parse(text) as Record<string, unknown> };
}

function tokenHashOf(data: Record<string, unknown>, name: string): string | undefined {
  const clusters = data.clusters as { name: string; tokenHash: string }[];
  return clusters.find((c) => c.name === name)?.tokenHash;
}

// deno-lint-ignore no-explicit-any
type K8sObject = Record<string, any>;

/**
 * A setting of the agent container in a manifest, wherever it is given: `--flag=V` or `--flag V` in
 * its args, an `env` entry, or a ConfigMap it loads with `envFrom` (flags win, as in the agent).
 */
function agentSetting(objects: K8sObject[], flag: string, envName: string): string | undefined {
  const container = objects.find((o) => o.kind === "Deployment")?.spec.template.spec.containers[0];
  const args: string[] = container?.args ?? [];
  for (let i = 0; i < args.length; i++) {
    if (args[i]!.startsWith(`--${flag}=`)) return args[i]!.slice(flag.length + 3);
    if (args[i] === `--${flag}`) return args[i + 1];
  }
  const env = (container?.env ?? []).find((e: K8sObject) => e.name === envName);
  if (env) return env.value;
  for (const from of container?.envFrom ?? []) {
    const map = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === from.configMapRef?.name);
    if (map?.data?.[envName] !== undefined) return map.data[envName];
  }
  return undefined;
}

/** `cluster list` rows by name: the AGENTS column. */
function agentsColumn(stdout: string): Map<string, number> {
  const rows = stdout.trim().split("\n").filter((l) => !l.startsWith("NAME") && !l.startsWith("("));
  return new Map(rows.map((l) => l.split(/\s+/)).map((cells) => [cells[0]!, Number(cells[1])]));
}

/** Waits for the hub's status file to show one agent of `name`, then runs `cluster list` once; its output. */
async function listWithOneAgent(dataDir: string, name: string): Promise<string> {
  await waitForHubStatus(dataDir, `one agent of ${name}`, (s) => s.clusters[name]?.length === 1 || undefined);
  const r = await cluster(dataDir, "list");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(agentsColumn(r.stdout).get(name), 1, r.stdout);
  return r.stdout;
}

/** A hub, an echo server and the agents a test starts; all stopped at the end whatever happens. */
async function withHub(
  fn: (env: { dir: string; hub: HubProcess; echo: TestServer; agents: TowerProcess[] }) => Promise<void>,
  before: (dir: string) => Promise<void>,
  hubArgs: string[] = [],
): Promise<void> {
  await withScratchDir("admin", async (dir) => {
    await before(dir);
    const echo = await echoServer();
    const agents: TowerProcess[] = [];
    let hub: HubProcess | undefined;
    try {
      hub = await startHub({ dataDir: dir, args: hubArgs });
      await fn({ dir, hub, echo, agents });
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      await hub?.stop();
      await echo.close();
    }
  });
}

Deno.test("cluster add prints the token, an agent command and a complete manifest; the registry keeps only the hash", async () => {
  await withScratchDir("admin", async (dir) => {
    const r = await cluster(dir, "add", "prod");
    assert.equal(r.code, 0, r.stderr);
    const { token, fingerprint, caFile } = parseIssued(r.stdout);
    assert.match(r.stdout, /^Added cluster 'prod'\./);
    assert.match(r.stdout, /Join token \(shown once; the hub keeps only its hash\):\n {2}tower_/);
    assert.equal(caFile, join(dir, "ca.crt"));

    // The commands a person can paste: the token-file form first, then the environment form.
    const commands = r.stdout.split("\n").filter((l) => l.includes("main_agent.ts"));
    assert.equal(commands.length, 2, r.stdout);
    assert.ok(
      commands[0]!.includes("--token-file TOKEN_FILE") && !commands[0]!.includes(token),
      commands[0]!,
    );
    const command = commands[1]!;
    assert.ok(command.includes(`TOWER_TOKEN='${token}'`), command);
    assert.ok(command.includes("--cluster prod"), command);
    assert.ok(command.includes(`--hub-fingerprint ${fingerprint}`), command);
    assert.ok(command.includes(`--ca-file ${caFile}`), command);
    assert.match(command, /--hub wss:\/\/\S+:8443\/tunnel/);

    // The manifest: every document parses and the agent has what it needs.
    const manifestText = r.stdout.split("(kubectl apply -f -):\n")[1];
    assert.ok(manifestText, r.stdout);
    const docs = YAML.parseAllDocuments(manifestText);
    for (const d of docs) assert.deepEqual(d.errors, []);
    const objects = docs.map((d) => d.toJS() as K8sObject);
    const ofKind = (kind: string) => objects.filter((o) => o.kind === kind);
    assert.equal(ofKind("Namespace")[0]?.metadata.name, "tower-system");
    assert.equal(ofKind("ServiceAccount")[0]?.metadata.name, "tower-agent");
    const role = ofKind("ClusterRole")[0]!;
    const impersonate = (role.rules as { resources: string[]; verbs: string[] }[])
      .filter((rule) => rule.verbs.includes("impersonate"));
    assert.ok(impersonate.some((rule) => rule.resources.includes("users")), JSON.stringify(role.rules));
    assert.ok(impersonate.some((rule) => rule.resources.includes("groups")));
    assert.ok(ofKind("ClusterRoleBinding").length === 1);
    const secret = ofKind("Secret")[0]!;
    assert.equal(secret.stringData.token, token);
    assert.equal(secret.stringData["hub-ca.crt"], await Deno.readTextFile(caFile));
    const deployment = ofKind("Deployment")[0]!;
    assert.equal(deployment.metadata.namespace, "tower-system");
    assert.equal(deployment.spec.template.spec.serviceAccountName, "tower-agent");
    assert.equal(agentSetting(objects, "cluster", "TOWER_CLUSTER"), "prod");
    assert.equal(agentSetting(objects, "hub-fingerprint", "TOWER_HUB_FINGERPRINT"), fingerprint);
    assert.equal(agentSetting(objects, "token-file", "TOWER_TOKEN_FILE"), "/etc/tower/token");
    assert.equal(agentSetting(objects, "ca-file", "TOWER_CA_FILE"), "/etc/tower/hub-ca.crt");
    assert.match(agentSetting(objects, "hub", "TOWER_HUB_URL") ?? "", /^wss:\/\/\S+:8443\/tunnel$/);

    // The registry has the hash, never the token.
    const reg = await registryFile(dir);
    assert.ok(!reg.text.includes(token), "token stored in the registry file");
    assert.ok(!reg.text.includes(token.slice("tower_".length)), "token body stored in the registry file");
    assert.equal(tokenHashOf(reg.data, "prod"), hashToken(token));
    assert.equal(
      (await Deno.stat(join(dir, "registry.yaml"))).mode! & 0o077,
      0,
      "registry readable by others",
    );

    // The token is not shown again by anything else.
    for (const args of [["list"], ["add", "prod"]] as const) {
      const again = await cluster(dir, args[0], ...args.slice(1));
      assert.ok(!again.stdout.includes(token) && !again.stderr.includes(token), args.join(" "));
    }
  });
});

Deno.test("cluster add --hub-url ws:// is remembered and needs no CA file", async () => {
  await withScratchDir("admin", async (dir) => {
    const r = await cluster(dir, "add", "edge", "--hub-url", "ws://hub.internal:8080/tunnel");
    assert.equal(r.code, 0, r.stderr);
    const command = r.stdout.split("\n").find((l) => l.includes("main_agent.ts"))!;
    assert.ok(command.includes("--hub ws://hub.internal:8080/tunnel"), command);
    assert.ok(!command.includes("--ca-file"), command);
    assert.deepEqual((await registryFile(dir)).data.settings, { publicUrl: "ws://hub.internal:8080/tunnel" });
    // The next cluster gets the remembered URL without the flag.
    const next = await cluster(dir, "add", "edge2");
    assert.ok(next.stdout.includes("Hub: ws://hub.internal:8080/tunnel"), next.stdout);
    const bad = await cluster(dir, "add", "edge3", "--hub-url", "https://hub.internal/");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--hub-url 'https:\/\/hub.internal\/' must be a ws:\/\/ or wss:\/\/ URL/);
  });
});

Deno.test("cluster add refuses names that are not DNS labels, with exit code 2", async () => {
  await withScratchDir("admin", async (dir) => {
    for (const args of [["A_B"], ["a.b"], ["--", "-x"], ["x".repeat(64)]]) {
      const r = await cluster(dir, "add", ...args);
      assert.equal(r.code, 2, `${args}: ${r.stdout}${r.stderr}`);
      assert.ok(r.stderr.includes("DNS label"), r.stderr);
      assert.ok(r.stderr.includes(`'${args.at(-1)}'`), r.stderr);
      assert.equal(r.stdout, "");
    }
    // Without '--' the dash is an option; the message says how to pass it.
    const dash = await cluster(dir, "add", "-x");
    assert.equal(dash.code, 2);
    assert.match(dash.stderr, /Unknown option '-x'.*'--'/);
    assert.deepEqual(
      (await registryFile(dir).catch(() => ({ data: { clusters: [] } }))).data.clusters ?? [],
      [],
    );
  });
});

Deno.test("cluster add of an existing name, and remove or rotate-token of an unknown one, are refused", async () => {
  await withScratchDir("admin", async (dir) => {
    const first = await addCluster(dir, "prod");
    const dup = await cluster(dir, "add", "prod");
    assert.equal(dup.code, 2);
    assert.match(
      dup.stderr,
      /cluster 'prod' already exists \(use 'cluster rotate-token prod' for a new token\)/,
    );
    assert.equal(
      tokenHashOf((await registryFile(dir)).data, "prod"),
      hashToken(first.token),
      "hash unchanged",
    );

    const rm = await cluster(dir, "remove", "nope");
    assert.equal(rm.code, 2);
    assert.match(rm.stderr, /cluster 'nope' does not exist/);
    const rot = await cluster(dir, "rotate-token", "nope");
    assert.equal(rot.code, 2);
    assert.match(rot.stderr, /cluster 'nope' does not exist/);

    const noName = await cluster(dir, "remove");
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /cluster remove takes exactly one NAME/);
    const verb = await cluster(dir, "explode");
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /unknown cluster command 'explode'/);

    const ok = await cluster(dir, "remove", "prod");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Removed cluster 'prod'/);
    assert.equal(tokenHashOf((await registryFile(dir)).data, "prod"), undefined);
  });
});

Deno.test("cluster rotate-token issues a new token and replaces the stored hash", async () => {
  await withScratchDir("admin", async (dir) => {
    const first = await addCluster(dir, "prod");
    const r = await cluster(dir, "rotate-token", "prod");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^New token for cluster 'prod'\./);
    const second = parseIssued(r.stdout);
    assert.notEqual(second.token, first.token);
    assert.equal(second.fingerprint, first.fingerprint);
    const reg = await registryFile(dir);
    assert.equal(tokenHashOf(reg.data, "prod"), hashToken(second.token));
    assert.ok(!reg.text.includes(second.token));
    const rec = (reg.data.clusters as Record<string, string>[])[0]!;
    assert.ok(!Number.isNaN(Date.parse(rec.tokenRotatedAt!)), "tokenRotatedAt recorded");
  });
});

Deno.test("cluster list without a running hub lists clusters and says so", async () => {
  await withScratchDir("admin", async (dir) => {
    await addCluster(dir, "alpha");
    await addCluster(dir, "beta");
    const r = await cluster(dir, "list");
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^NAME\s+AGENTS\s+SINCE\s+BYTES-IN\s+BYTES-OUT\s+LABELS$/);
    assert.match(lines[1]!, /^alpha\s+0\s+-\s+0\s+0\s+-$/);
    assert.match(lines[2]!, /^beta\s+0\s+-\s+0\s+0\s+-$/);
    assert.ok(r.stdout.includes("(the hub is not running"), r.stdout);
  });
});

Deno.test("fingerprint is an OpenSSH SHA256 fingerprint, stable across runs and the one add prints", async () => {
  await withScratchDir("admin", async (dir) => {
    const a = await serverCommand(["fingerprint", "--data-dir", dir]);
    const b = await serverCommand(["fingerprint", "--data-dir", dir]);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /^SHA256:[A-Za-z0-9+/]{43}\n$/);
    assert.equal(b.stdout, a.stdout);
    const added = await addCluster(dir, "prod");
    assert.equal(added.fingerprint, a.stdout.trim());
    const other = await fingerprintOfFreshDataDir();
    assert.notEqual(other, a.stdout, "a different data dir has a different host key");
  });
});

/** What `fingerprint` prints for a new, empty data dir. */
async function fingerprintOfFreshDataDir(): Promise<string> {
  let out = "";
  await withScratchDir("admin", async (dir) => {
    out = (await serverCommand(["fingerprint", "--data-dir", dir])).stdout;
  });
  return out;
}

Deno.test("cluster list against a running hub shows the connected agent", async () => {
  let added = { token: "", fingerprint: "", caFile: "" };
  await withHub(async ({ dir, hub, echo, agents }) => {
    await connectedAgent(hub, echo, agents, "prod", added);
    const out = await listWithOneAgent(dir, "prod");
    assert.equal(agentsColumn(out).get("idle"), 0);
    assert.ok(!out.includes("the hub is not running"), out);
    const prodRow = out.split("\n").find((l) => l.startsWith("prod"))!;
    const [, , since, bytesIn, bytesOut] = prodRow.split(/\s+/);
    assert.ok(!Number.isNaN(Date.parse(since!)), prodRow);
    assert.ok(Number(bytesIn) > 0 && Number(bytesOut) > 0, prodRow);
  }, async (dir) => {
    added = await addCluster(dir, "prod");
    await addCluster(dir, "idle");
  });
});

/** Starts an agent of `cluster` publishing the echo server, and waits until it is connected. */
async function connectedAgent(
  hub: HubProcess,
  echo: TestServer,
  agents: TowerProcess[],
  cluster: string,
  issued: { token: string; fingerprint: string; caFile: string },
  name?: string,
): Promise<TowerProcess> {
  const agent = startAgent({
    hubUrl: hub.url,
    cluster,
    token: issued.token,
    fingerprint: issued.fingerprint,
    caFile: issued.caFile,
    publish: [`echo=127.0.0.1:${echo.port}`],
    ...(name ? { name } : {}),
  });
  agents.push(agent);
  await agent.waitForMsg("connected to hub");
  return agent;
}

/**
 * A second cluster, "other", with its agent connected and its echo endpoint on a hub `--forward` port: what
 * happens to one cluster must leave it alone. `check()` asserts that it kept its session and still carries
 * traffic.
 */
async function bystander(
  hub: HubProcess,
  echo: TestServer,
  agents: TowerProcess[],
  other: { token: string; fingerprint: string; caFile: string },
  port: number,
): Promise<{ check(): Promise<void> }> {
  const agent = await connectedAgent(hub, echo, agents, "other", other, "agent-other");
  const from = agent.lines.length;
  return {
    check: async () => {
      const data = patternChunk(9, 256 << 10);
      assert.equal(Buffer.compare(await roundTrip(port, data), data), 0, "traffic to the other cluster");
      assert.equal(agent.lines.slice(from).filter((l) => l.msg === "disconnected from hub").length, 0);
    },
  };
}

Deno.test("cluster remove on a running hub closes the agent's session at once and refuses its return", async () => {
  let added = { token: "", fingerprint: "", caFile: "" };
  let other = { token: "", fingerprint: "", caFile: "" };
  const port = await freePort();
  await withHub(async ({ dir, hub, echo, agents }) => {
    const others = await bystander(hub, echo, agents, other, port);
    const agent = await connectedAgent(hub, echo, agents, "prod", added);
    const hubFrom = hub.lines.length;
    const agentFrom = agent.lines.length;
    const r = await cluster(dir, "remove", "prod");
    assert.equal(r.code, 0, r.stderr);
    const closing = await hub.waitForMsg("agent session closing", 2000, hubFrom);
    assert.equal(closing.reason, "cluster removed");
    const removed = await hub.waitForMsg("cluster removed", 2000, hubFrom);
    assert.equal(removed.cluster, "prod");
    assert.equal(removed.sessionsClosed, 1);
    await agent.waitForMsg("disconnected from hub", 5000, agentFrom);
    // Reconnect waits at most the first backoff ceiling (1 s).
    await agent.waitForMsg("hub refused this agent", 10_000, agentFrom);
    const refusal = await hub.waitForMsg("agent refused", 2000, hubFrom);
    assert.equal(refusal.reason, "unknown cluster");
    assert.ok(!hub.dump().includes(added.token) && !agent.dump().includes(added.token), "token in a log");
    await others.check();
  }, async (dir) => {
    added = await addCluster(dir, "prod");
    other = await addCluster(dir, "other");
  }, ["--forward", `127.0.0.1:${port}=other/echo`]);
});

Deno.test("cluster rotate-token on a running hub drops and refuses the old token; the new one connects", async () => {
  let added = { token: "", fingerprint: "", caFile: "" };
  let other = { token: "", fingerprint: "", caFile: "" };
  const port = await freePort();
  await withHub(async ({ dir, hub, echo, agents }) => {
    const others = await bystander(hub, echo, agents, other, port);
    const old = await connectedAgent(hub, echo, agents, "prod", added, "old-agent");
    const hubFrom = hub.lines.length;
    const oldFrom = old.lines.length;

    const r = await cluster(dir, "rotate-token", "prod");
    assert.equal(r.code, 0, r.stderr);
    const { token: newToken } = parseIssued(r.stdout);
    const rotated = await hub.waitForMsg("cluster token rotated", 2000, hubFrom);
    assert.equal(rotated.sessionsClosed, 1);
    await old.waitForMsg("disconnected from hub", 5000, oldFrom);
    await old.waitForMsg("hub refused this agent", 10_000, oldFrom);
    const refusal = await hub.waitForMsg("agent refused", 2000, hubFrom);
    assert.equal(refusal.reason, "wrong token");

    const fresh = await connectedAgent(hub, echo, agents, "prod", { ...added, token: newToken }, "new-agent");
    await listWithOneAgent(dir, "prod");
    for (const p of [hub, old, fresh]) {
      assert.ok(!p.dump().includes(newToken) && !p.dump().includes(added.token), `token in ${p.name}'s log`);
    }
    await others.check();
  }, async (dir) => {
    added = await addCluster(dir, "prod");
    other = await addCluster(dir, "other");
  }, ["--forward", `127.0.0.1:${port}=other/echo`]);
});

Deno.test("cluster add --token-file writes the token to a 0600 file and never prints it", async () => {
  await withScratchDir("admin", async (dir) => {
    const file = join(dir, "edge.token");
    // An existing file with wider rights is narrowed before the token goes in.
    await Deno.writeTextFile(file, "old", { mode: 0o644 });
    const r = await cluster(dir, "add", "edge", "--token-file", file);
    assert.equal(r.code, 0, r.stderr);
    const token = (await Deno.readTextFile(file)).trim();
    assert.match(token, /^tower_[A-Za-z0-9_-]{43}$/);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    assert.ok(!r.stdout.includes(token), "the token reached stdout");
    assert.match(r.stdout, new RegExp(`Join token written to ${file} \\(mode 0600`));
    const command = r.stdout.split("\n").find((l) => l.includes("main_agent.ts"))!;
    assert.ok(command.includes(`--token-file ${file}`), command);
    // The manifest has no Secret; the printed kubectl line makes it from the file.
    const manifestText = r.stdout.split("\n---\n").slice(1).join("\n---\n");
    const kinds = YAML.parseAllDocuments(manifestText).map((d) => (d.toJSON() as { kind?: string })?.kind);
    assert.ok(kinds.includes("Deployment") && !kinds.includes("Secret"), kinds.join());
    assert.match(r.stdout, new RegExp(`create secret generic tower-agent --from-file=token=${file}`));
    // rotate-token takes the same flag; the agent command line reads the new token.
    const rotated = await cluster(dir, "rotate-token", "edge", "--token-file", file);
    assert.equal(rotated.code, 0, rotated.stderr);
    const next = (await Deno.readTextFile(file)).trim();
    assert.notEqual(next, token);
    assert.ok(!rotated.stdout.includes(next));
  });
});
