/**
 * What kubectl sees when a draining hub ends its exec and port-forward streams, on both of kubectl's
 * transports: the protocol's own close (a WebSocket Close 1001, a SPDY GOAWAY) at a frame boundary, not
 * a connection that stopped. Real kubectl, real API server, one hub of the file registry.
 */

import assert from "node:assert/strict";
import { spawnListening, startTowerEnv } from "./tower_env.ts";
import { type Running, running, streamPaths } from "./_kubectl_helpers.ts";
import { eventually } from "../helpers/wait.ts";

const clusterName = "drainstreams";

Deno.test("SIGTERM: exec and port-forward end with their protocol's close; kubectl says so and exits", async () => {
  const env = await startTowerEnv({ clusters: [clusterName], hubArgs: ["--drain-timeout", "20s"] });
  const started: Running[] = [];
  let backend: { stop(): Promise<void> } | undefined;
  const conns: Deno.Conn[] = [];
  try {
    const cluster = env.clusters.get(clusterName)!;
    const kc = await env.addUser("root", ["system:masters"], ["*"]);
    await cluster.createPod("box");
    const echoPort = cluster.forwardPorts[0]!;
    backend = await spawnListening(
      cluster,
      `import net from "node:net";
       net.createServer({ allowHalfOpen: true }, (s) => { s.on("error", () => {}); s.pipe(s); })
         .listen(${echoPort}, "0.0.0.0", () => console.log("listening"));`,
      "echo",
    );
    const spawn = (args: string[], extraEnv: Record<string, string>, stdin: "piped" | "null") => {
      const r = running(
        new Deno.Command(env.kubectlPath, {
          args: [`--kubeconfig=${kc}`, ...args],
          env: extraEnv,
          stdin,
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      );
      started.push(r);
      return r;
    };

    const execs: Running[] = [];
    const forwards: Running[] = [];
    for (const path of streamPaths) {
      // An interactive exec, known to be streaming once its first line came back.
      const exec = spawn(["exec", "-i", "box", "--", "sh", "-c", "cat"], path.remoteCommandEnv, "piped");
      await eventually(20_000, async () => {
        await exec.write(`before-drain-${path.name}\n`);
        await exec.out.waitForText(`before-drain-${path.name}`, 1_000);
      });
      execs.push(exec);
      // A port-forward with one connection open through it, echoing.
      const pf = spawn(
        ["port-forward", "--address=127.0.0.1", "pod/box", `:${echoPort}`],
        path.portForwardEnv,
        "null",
      );
      await pf.out.waitFor((t) => /Forwarding from 127\.0\.0\.1:\d+/.test(t), "Forwarding from");
      const port = Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(pf.out.text)![1]);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(conn);
      await conn.write(new TextEncoder().encode("echo-me"));
      const buf = new Uint8Array(7);
      for (let n = 0; n < 7;) {
        const r = await conn.read(buf.subarray(n));
        assert.ok(r !== null, "the echo through port-forward ended");
        n += r;
      }
      forwards.push(pf);
    }

    const from = env.hub.lines.length;
    env.hub.signal("SIGTERM");
    const status = await env.hub.exited;
    assert.equal(status.code, 0, env.hub.dump());
    const drained = await env.hub.waitForMsg("hub drained", 1000, from);
    assert.equal(drained.longRunningEnded, 4, JSON.stringify(drained));

    // WebSocket: kubectl reads the Close frame and names it. SPDY: after the GOAWAY its streams end and it
    // exits as after a normal end. A connection that merely stopped would read as EOF or close 1006.
    const [wsExec, spdyExec] = [await execs[0]!.finish(10_000), await execs[1]!.finish(10_000)];
    assert.match(execs[0]!.err.text, /websocket: close 1001 \(going away\): hub replica draining/);
    assert.notEqual(wsExec.code, 0);
    assert.equal(spdyExec.code, 0, execs[1]!.err.text);
    // Port-forward (both transports): kubectl ends when its connection to the hub is closed.
    for (const pf of forwards) {
      const s = await pf.finish(10_000);
      assert.notEqual(s.code, 0);
      assert.match(pf.err.text, /lost connection to pod/);
    }
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    for (const r of started) await r.stop().catch(() => {});
    await backend?.stop();
    await env.stop();
  }
});
