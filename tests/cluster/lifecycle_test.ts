/**
 * Teardown when the owner goes away: the CLI cleans up on SIGINT, and what a SIGKILLed owner leaves
 * behind is reaped by the next harness start.
 */

import assert from "node:assert/strict";
import { startClusters } from "./cluster.ts";
import { leftovers, netnsPids, StreamText } from "./_test_helpers.ts";
import { within } from "../helpers/wait.ts";

const CLI = new URL("./cli.ts", import.meta.url).pathname;

interface Owned {
  child: Deno.ChildProcess;
  out: StreamText;
  err: StreamText;
  cluster: { netns: string; vethName: string; dir: string };
  pids: number[];
}

/** Runs `cli.ts up` for one cluster in a child process and waits until it is ready. */
async function cliUp(name: string): Promise<Owned> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "up", "--clusters", name],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new StreamText(child.stdout);
  const err = new StreamText(child.stderr);
  try {
    await out.waitFor(/clusters ready/, 60_000);
  } catch (e) {
    child.kill("SIGKILL");
    await child.status;
    await Promise.all([out.done, err.done]);
    throw new Error(`${e}\nstderr:\n${err.text}`);
  }
  const m = out.text.match(/netns: +(\S+) +\(root side (\S+) /);
  const dir = out.text.match(/logs: +(\S+)\/\{etcd/);
  assert.ok(m && dir, out.text);
  const cluster = { netns: m[1]!, vethName: m[2]!, dir: dir[1]! };
  assert.equal(cluster.netns, `tower-${child.pid}-${name}`);
  return { child, out, err, cluster, pids: await netnsPids(cluster.netns) };
}

Deno.test("cli up: prints how to use the cluster, and SIGINT tears everything down", async () => {
  const o = await cliUp("cli-sigint");
  assert.match(
    o.out.text,
    /kubectl: +ip netns exec tower-\d+-cli-sigint \S+\/kubectl --kubeconfig \S+ get nodes/,
  );
  assert.ok(o.pids.length >= 3);
  o.child.kill("SIGINT");
  const status = await within(30_000, "cli exit after SIGINT", o.child.status);
  await Promise.all([o.out.done, o.err.done]);
  assert.equal(status.code, 0, o.err.text);
  assert.match(o.err.text, /stopped; nothing left behind/);
  assert.deepEqual(await leftovers(o.cluster, o.pids), {
    netns: false,
    veth: false,
    livePids: [],
    dir: false,
  });
});

Deno.test("a SIGKILLed owner's namespace, veth, processes and dir are reaped by the next start", async () => {
  const o = await cliUp("orphan");
  o.child.kill("SIGKILL");
  await o.child.status;
  await Promise.all([o.out.done, o.err.done]);
  // The owner is gone but everything it started is still there…
  const before = await leftovers(o.cluster, o.pids);
  assert.deepEqual(before, { netns: true, veth: true, livePids: o.pids, dir: true });

  // …until the next harness start reaps it.
  const [c] = await within(60_000, "startClusters", startClusters(["reaper"]));
  let pids: number[] = [];
  try {
    assert.deepEqual(await leftovers(o.cluster, o.pids), {
      netns: false,
      veth: false,
      livePids: [],
      dir: false,
    });
    assert.equal((await c!.kubectl(["get", "--raw=/readyz"])).stdout, "ok");
    pids = await netnsPids(c!.netns);
  } finally {
    await c!.stop();
  }
  assert.deepEqual(await leftovers(c!, pids), { netns: false, veth: false, livePids: [], dir: false });
});
