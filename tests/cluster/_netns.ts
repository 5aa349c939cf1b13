/**
 * Network namespaces for test clusters: each cluster gets its own namespace joined to the root
 * namespace by a veth pair on a /30 from 10.231.0.0/16. Names carry the owner's pid so that a later
 * harness start can find and remove what a killed owner left behind.
 *
 * Naming (owner pid P, cluster name N, a free index I):
 *   netns  tower-P-N        veth (root side) twPhI        veth (namespace side) eth0
 *   dir    /tmp/tower/k8s-P-N      (N gets a -2, -3… suffix if the same process runs N twice)
 *
 * @module
 */

/** Root of all harness state; the product's permission sets allow reads under /tmp/tower. */
export const STATE_ROOT = "/tmp/tower";
const LOCK_FILE = `${STATE_ROOT}/.k8s-harness.lock`;
const NETNS_RE = /^tower-(\d+)-/;
const VETH_RE = /^tw(\d+)h\d+$/;
const DIR_RE = /^k8s-(\d+)-/;
/** Test-only address range; /30 subnets are handed out from it. */
const RANGE_PREFIX = "10.231.";

/** A network namespace with its veth link to the root namespace. */
export interface Netns {
  name: string;
  vethRoot: string;
  /** Root-namespace side address (where a hub in the root namespace is reached from inside). */
  hubAddress: string;
  /** Namespace side address. */
  nsAddress: string;
}

let ipPath: string | undefined;
/** Path of the iproute2 `ip` tool (often in /usr/sbin, which may be missing from PATH). */
export async function ipTool(): Promise<string> {
  if (ipPath) return ipPath;
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const d of dirs) {
    try {
      if (d && (await Deno.stat(`${d}/ip`)).isFile) return ipPath = `${d}/ip`;
    } catch { /* next */ }
  }
  throw new Error("tower test cluster: the `ip` tool is missing (Debian/Ubuntu: apt-get install iproute2)");
}

/**
 * What `ip link del` says of a link that is already gone: deleting a namespace removes the peer of a veth
 * pair a moment later, and depending on that moment the root end is "Cannot find device" or, mid-removal,
 * "No such device".
 */
const linkGone = /Cannot find device|does not exist|No such device/;

/** Runs `ip ARGS`; throws with its stderr unless `tolerate` matches that stderr. */
export async function ip(args: string[], tolerate?: RegExp): Promise<string> {
  const out = await new Deno.Command(await ipTool(), { args, stdout: "piped", stderr: "piped" }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success && !(tolerate && tolerate.test(stderr))) {
    throw new Error(`ip ${args.join(" ")} failed: ${stderr.trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Checks the prerequisites once and says what to do when they are missing. */
export async function checkHost(): Promise<void> {
  if (Deno.uid() !== 0) {
    throw new Error(
      "tower test cluster: needs root (it creates network namespaces and veth links); run the tests as root " +
        "or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN",
    );
  }
  await ipTool();
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Runs `fn` holding the machine-wide harness lock (allocation and reaping must not interleave). */
export async function withHarnessLock<T>(fn: () => Promise<T>): Promise<T> {
  await Deno.mkdir(STATE_ROOT, { recursive: true });
  const f = await Deno.open(LOCK_FILE, { create: true, write: true });
  try {
    await f.lock(true);
    return await fn();
  } finally {
    f.close(); // closing releases the lock
  }
}

async function netnsNames(): Promise<string[]> {
  const out = await ip(["netns", "list"]);
  return out.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n !== "");
}

/** Pids of all processes inside the namespace. */
export async function netnsPids(name: string): Promise<number[]> {
  const out = await ip(["netns", "pids", name], /No such file|Invalid netns|does not exist/);
  return out.split("\n").filter((l) => l.trim() !== "").map(Number);
}

/** SIGKILLs every process in the namespace and waits (up to 10 s) until none is left. */
export async function killAllIn(name: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const pids = await netnsPids(name);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    if (Date.now() > deadline) {
      throw new Error(`processes ${pids.join(",")} in netns ${name} survive SIGKILL`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Removes a namespace, its veth and its dir, killing whatever still runs inside. Idempotent. */
export async function destroyNetns(
  name: string,
  vethRoot: string | undefined,
  dir: string | undefined,
): Promise<void> {
  const errors: unknown[] = [];
  const attempt = async (f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      errors.push(e);
    }
  };
  if ((await netnsNames()).includes(name)) {
    await attempt(() => killAllIn(name));
    await attempt(() => ip(["netns", "del", name], /No such file/));
  }
  if (vethRoot) await attempt(() => ip(["link", "del", vethRoot], linkGone));
  if (dir) {
    await attempt(() =>
      Deno.remove(dir, { recursive: true }).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      })
    );
  }
  if (errors.length > 0) throw new AggregateError(errors, `teardown of netns ${name} was incomplete`);
}

/** What {@linkcode reapLeftovers} removed. */
export interface Reaped {
  netns: string[];
  veths: string[];
  dirs: string[];
}

/**
 * Removes namespaces, veth links and dirs whose owner process is gone (a harness that was SIGKILLed
 * or crashed). Call with the harness lock held.
 */
export async function reapLeftoversLocked(): Promise<Reaped> {
  const reaped: Reaped = { netns: [], veths: [], dirs: [] };
  const dead = (re: RegExp, s: string) => {
    const m = s.match(re);
    return m?.[1] !== undefined && !pidAlive(Number(m[1]));
  };
  for (const ns of await netnsNames()) {
    if (!dead(NETNS_RE, ns)) continue;
    await destroyNetns(ns, undefined, undefined);
    reaped.netns.push(ns);
  }
  for (const link of await rootLinks()) {
    if (!dead(VETH_RE, link)) continue;
    await ip(["link", "del", link], linkGone);
    reaped.veths.push(link);
  }
  for await (const e of Deno.readDir(STATE_ROOT)) {
    if (!e.isDirectory || !dead(DIR_RE, e.name)) continue;
    await Deno.remove(`${STATE_ROOT}/${e.name}`, { recursive: true });
    reaped.dirs.push(`${STATE_ROOT}/${e.name}`);
  }
  return reaped;
}

/** Names of the links in the root namespace. */
export async function rootLinks(): Promise<string[]> {
  const out = await ip(["-o", "link", "show"]);
  return out.split("\n").map((l) => l.split(": ")[1]?.split("@")[0] ?? "").filter((n) => n !== "");
}

async function usedSubnets(): Promise<Set<number>> {
  const out = await ip(["-o", "-4", "addr", "show"]);
  const used = new Set<number>();
  for (const m of out.matchAll(/inet 10\.231\.(\d+)\.(\d+)\//g)) {
    used.add(Number(m[1]) * 64 + (Number(m[2]) >> 2));
  }
  return used;
}

/**
 * Picks unused names for a cluster's namespace, veth and dir: `tower-<pid>-<name>` unless that is
 * taken (another cluster of the same name in this process, e.g. a parallel test worker), then
 * `tower-<pid>-<name>-2` and so on. Call with the harness lock held.
 */
export async function allocateNamingLocked(
  clusterName: string,
): Promise<{ netns: string; vethRoot: string; dir: string }> {
  const taken = new Set(await netnsNames());
  const links = new Set(await rootLinks());
  let suffix = "";
  for (let n = 2; taken.has(`tower-${Deno.pid}-${clusterName}${suffix}`); n++) suffix = `-${n}`;
  let index = 0;
  while (links.has(`tw${Deno.pid}h${index}`)) index++;
  return {
    netns: `tower-${Deno.pid}-${clusterName}${suffix}`,
    vethRoot: `tw${Deno.pid}h${index}`,
    dir: `${STATE_ROOT}/k8s-${Deno.pid}-${clusterName}${suffix}`,
  };
}

/**
 * Creates the namespace (loopback up) and its veth pair on a free /30. Call with the harness lock held
 * so concurrent harness processes pick distinct subnets.
 */
export async function createNetnsLocked(name: string, vethRoot: string): Promise<Netns> {
  const used = await usedSubnets();
  let subnet = -1;
  for (let s = 0; s < 16384; s++) {
    if (!used.has(s)) {
      subnet = s;
      break;
    }
  }
  if (subnet < 0) throw new Error("no free /30 left in 10.231.0.0/16");
  const base = `${RANGE_PREFIX}${subnet >> 6}.`;
  const hubAddress = `${base}${(subnet & 63) * 4 + 1}`;
  const nsAddress = `${base}${(subnet & 63) * 4 + 2}`;
  await ip(["netns", "add", name]);
  try {
    await ip(["-n", name, "link", "set", "lo", "up"]);
    await ip(["link", "add", vethRoot, "type", "veth", "peer", "name", "eth0", "netns", name]);
    await ip(["addr", "add", `${hubAddress}/30`, "dev", vethRoot]);
    await ip(["link", "set", vethRoot, "up"]);
    await ip(["-n", name, "addr", "add", `${nsAddress}/30`, "dev", "eth0"]);
    await ip(["-n", name, "link", "set", "eth0", "up"]);
  } catch (e) {
    await destroyNetns(name, vethRoot, undefined).catch(() => {});
    throw e;
  }
  return { name, vethRoot, hubAddress, nsAddress };
}
