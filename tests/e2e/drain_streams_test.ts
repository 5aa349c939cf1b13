/**
 * What kubectl sees when a draining hub ends its exec and port-forward streams, on both of kubectl's
 * transports: the protocol's own close (a WebSocket Close 1001, a SPDY GOAWAY) at a frame boundary, not
 * a connection that stopped. Then the same for streams that landed on another replica and are carried
 * through the draining one: a watch ends after a whole event, an exec with a Close frame. Real kubectl,
 * real API server, hubs of the file registry.
 */

import assert from "node:assert/strict";
import https from "node:https";
import { Buffer } from "node:buffer";
import YAML from "yaml";
import { spawnListening, startTowerEnv } from "./tower_env.ts";
import {
  applyEchoService,
  framedHead,
  rawUpgrade,
  startBackend,
  tlsOfKubeconfig,
} from "./_service_helpers.ts";
import { eofFramed } from "../../lib/tunnel/mod.ts";
import { type HubProcess, replicaOf, startSecondReplica } from "../helpers/tower_procs.ts";
import { type Running, running, streamPaths } from "./_kubectl_helpers.ts";
import { eventually } from "../helpers/wait.ts";

const clusterName = "drainstreams";

Deno.test("SIGTERM: exec and port-forward end with their protocol's close; kubectl says so and exits; a forward gets its EOF frame", async () => {
  const env = await startTowerEnv({
    clusters: [clusterName],
    agentArgs: ["--services-namespaces", "web"],
    hubArgs: ["--drain-timeout", "20s"],
  });
  const started: Running[] = [];
  const backends: { stop(): Promise<void> }[] = [];
  const conns: Deno.Conn[] = [];
  try {
    const cluster = env.clusters.get(clusterName)!;
    const kc = await env.addUser("root", ["system:masters"], ["*"]);
    await cluster.createPod("box");
    const echoPort = cluster.forwardPorts[0]!;
    backends.push(
      await spawnListening(
        cluster,
        `import net from "node:net";
       net.createServer({ allowHalfOpen: true }, (s) => { s.on("error", () => {}); s.pipe(s); })
         .listen(${echoPort}, "0.0.0.0", () => console.log("listening"));`,
        "echo",
      ),
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

    // A framed TCP stream to a Service port (what `main_server.ts forward` opens), with bytes sent.
    backends.push(await startBackend(cluster, "bufecho", 9000));
    await applyEchoService(cluster);
    const creds = await tlsOfKubeconfig(kc, await Deno.readTextFile(env.added.get(clusterName)!.caFile));
    const forwardPath = `/clusters/${clusterName}/services/web/echo:9000`;
    // The Service is published once the agent's informer has it.
    const socket = await eventually(20_000, async () => {
      const { socket, status } = await rawUpgrade(env.hub.port, creds, framedHead(forwardPath));
      if (status !== 101) socket.destroy();
      assert.equal(status, 101);
      return socket;
    });
    const forward = eofFramed(socket);
    const forwardEnded = new Promise<string>((resolve) => {
      forward.once("end", () => resolve("end"));
      forward.once("error", (e: Error) => resolve(`error: ${e.message}`));
    });
    forward.resume();
    await new Promise<void>((r) => forward.write("sent before the drain", () => r()));

    const from = env.hub.lines.length;
    env.hub.signal("SIGTERM");
    const status = await env.hub.exited;
    assert.equal(status.code, 0, env.hub.dump());
    const drained = await env.hub.waitForMsg("hub drained", 1000, from);
    assert.equal(drained.longRunningEnded, 5, JSON.stringify(drained));
    // The forward's reading side ended with the EOF frame, not with a connection that stopped.
    assert.equal(await forwardEnded, "end");
    forward.destroy();

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
    for (const b of backends) await b.stop();
    await env.stop();
  }
});

interface Kubeconfig {
  clusters: { cluster: Record<string, string> }[];
  users: { user: Record<string, string> }[];
}

/**
 * A raw watch: resolves "end" when its chunked stream ended cleanly right after a whole event, "cut" when
 * it ended in any other way. `events` counts the events seen.
 */
function rawWatch(
  tls: https.RequestOptions,
  path: string,
): { answered: Promise<void>; outcome: Promise<"end" | "cut">; events: () => number } {
  let events = 0;
  let answered: () => void = () => {};
  const started = new Promise<void>((r) => (answered = r));
  const outcome = new Promise<"end" | "cut">((resolve) => {
    const req = https.get({ ...tls, path }, (res) => {
      assert.equal(res.statusCode, 200);
      answered();
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          events++;
        }
      });
      res.on("end", () => resolve(res.complete && buf === "" ? "end" : "cut"));
      res.on("error", () => resolve("cut"));
    });
    req.on("error", () => resolve("cut"));
  });
  return { answered: started, outcome, events: () => events };
}

Deno.test("SIGTERM of the replica relaying a watch and an exec for another: the watch ends after an event, the exec with Close 1001", async () => {
  const cluster = "relaydrain";
  const env = await startTowerEnv({
    clusters: [cluster],
    hubArgs: ["--peer-listen", "127.0.0.1:0", "--drain-timeout", "10s"],
  });
  let b: HubProcess | undefined;
  let exec: Running | undefined;
  try {
    b = await startSecondReplica(env.dataDir);
    await env.clusters.get(cluster)!.createPod("box");
    const viaA = await env.addUser("ops", ["system:masters"], ["*"]);
    const viaB = `${viaA}.b`;
    const text = await Deno.readTextFile(viaA);
    await Deno.writeTextFile(viaB, text.replaceAll(`127.0.0.1:${env.hub.port}/`, `127.0.0.1:${b.port}/`));
    const kc = YAML.parse(text) as Kubeconfig;
    const b64 = (v: string | undefined) => Buffer.from(v ?? "", "base64").toString();
    const tls = {
      host: "127.0.0.1",
      port: b.port,
      ca: b64(kc.clusters[0]?.cluster["certificate-authority-data"]),
      cert: b64(kc.users[0]?.user["client-certificate-data"]),
      key: b64(kc.users[0]?.user["client-key-data"]),
      agent: false as const,
    };

    // Both land on B, which has no agent: A relays them.
    const watch = rawWatch(tls, `/clusters/${cluster}/api/v1/namespaces/default/configmaps?watch=1`);
    await watch.answered;
    const created = await env.kubectl(viaB, ["--context", cluster, "create", "configmap", "before-drain"]);
    assert.equal(created.code, 0, created.stderr);
    exec = running(
      new Deno.Command(env.kubectlPath, {
        args: [`--kubeconfig=${viaB}`, "--context", cluster, "exec", "-i", "box", "--", "sh", "-c", "cat"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    await eventually(20_000, async () => {
      await exec!.write("before-drain\n");
      await exec!.out.waitForText("before-drain", 1_000);
    });
    await eventually(10_000, () => assert.ok(watch.events() >= 1, "the watch saw the ConfigMap"));

    const from = env.hub.lines.length;
    env.hub.signal("SIGTERM");
    const status = await env.hub.exited;
    assert.equal(status.code, 0, env.hub.dump());
    const drained = await env.hub.waitForMsg("hub drained", 1000, from);
    assert.ok(Number(drained.relayedWoundDown) >= 2, JSON.stringify(drained));

    assert.equal(await watch.outcome, "end", "the watch through the draining replica was cut");
    const s = await exec.finish(10_000);
    assert.notEqual(s.code, 0);
    assert.match(exec.err.text, /websocket: close 1001 \(going away\): hub replica draining/);
    // B's audit line of each names A as the relay.
    const a = replicaOf(env.hub);
    assert.ok(b.stdout.some((l) => l.includes(`"via":"${a}"`) && l.includes("/exec")));
  } finally {
    await exec?.stop().catch(() => {});
    await b?.stop();
    await env.stop();
  }
});
