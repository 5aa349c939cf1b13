/**
 * The agent reaching the hub through a real HTTP CONNECT proxy (Debian's tinyproxy): traffic flows
 * through a hub `--forward`, the proxy's own log shows the CONNECT, Basic auth works and a wrong
 * password is reported, and NO_PROXY bypasses the proxy.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  addCluster,
  type AddedCluster,
  type HubProcess,
  scratchDir,
  startAgent,
  startHub,
  type TowerProcess,
} from "../helpers/tower_procs.ts";
import { echoServer, freePort, patternChunk, roundTrip, type TestServer } from "../helpers/net_servers.ts";

/** Path of the tinyproxy binary, or a failure that says how to get it (never a skip). */
async function tinyproxyPath(): Promise<string> {
  for (const p of ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy", "/usr/local/bin/tinyproxy"]) {
    if (await Deno.stat(p).then(() => true, () => false)) return p;
  }
  throw new Error(
    "tinyproxy is not installed; these tests need a real HTTP CONNECT proxy: apt-get install tinyproxy",
  );
}

/** A running tinyproxy in the foreground, with its log lines. */
interface Tinyproxy {
  port: number;
  lines: string[];
  /** CONNECT requests it logged for `port`, e.g. `CONNECT 127.0.0.1:8443 HTTP/1.1`. */
  connects(port: number): string[];
  stop(): Promise<void>;
}

/** Starts tinyproxy on a free port, allowing CONNECT to `connectPort` only, with Basic auth if given. */
async function startTinyproxy(
  dir: string,
  connectPort: number,
  auth?: { user: string; pass: string },
): Promise<Tinyproxy> {
  const binary = await tinyproxyPath();
  const port = await freePort();
  const config = join(dir, "tinyproxy.conf");
  await Deno.writeTextFile(
    config,
    [
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 60",
      "MaxClients 20",
      "LogLevel Info",
      "Allow 127.0.0.1",
      `ConnectPort ${connectPort}`,
      ...(auth ? [`BasicAuth ${auth.user} ${auth.pass}`] : []),
      "",
    ].join("\n"),
  );
  const child = new Deno.Command(binary, {
    args: ["-d", "-c", config],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let onLine = () => {};
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
      onLine();
    }
    if (buf) lines.push(buf);
    onLine();
  };
  const pumps = [pump(child.stdout), pump(child.stderr)];
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 3000);
    await child.status;
    clearTimeout(killer);
    await Promise.all(pumps);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`tinyproxy did not start:\n${lines.join("\n")}`)),
        10_000,
      );
      const exited = child.status.then((s) =>
        reject(new Error(`tinyproxy exited ${s.code}:\n${lines.join("\n")}`))
      );
      onLine = () => {
        if (lines.some((l) => l.includes("Accepting connections"))) {
          clearTimeout(timer);
          resolve();
        }
      };
      onLine();
      void exited;
    });
  } catch (e) {
    await stop();
    throw e;
  }
  onLine = () => {};
  return {
    port,
    lines,
    connects: (to: number) =>
      lines.map((l) => /Request \(file descriptor \d+\): (CONNECT \S+ HTTP\/1\.[01])/.exec(l)?.[1])
        .filter((x): x is string => x !== undefined && x.includes(`:${to} `)),
    stop,
  } satisfies Tinyproxy;
}

/** A hub forwarding a local port to `prod/echo`, an echo server, a proxy in front of the hub. */
interface Stack {
  dir: string;
  hub: HubProcess;
  proxy: Tinyproxy;
  echo: TestServer;
  added: AddedCluster;
  forwardPort: number;
  agents: TowerProcess[];
  /** Starts an agent of `prod` publishing the echo server, with these proxy variables. */
  agent(proxyEnv: Record<string, string>): TowerProcess;
}

async function withStack(auth: { user: string; pass: string } | undefined, fn: (s: Stack) => Promise<void>) {
  await tinyproxyPath();
  const dir = await scratchDir("proxy");
  const echo = await echoServer();
  const agents: TowerProcess[] = [];
  let hub: HubProcess | undefined;
  let proxy: Tinyproxy | undefined;
  try {
    const added = await addCluster(dir, "prod");
    const forwardPort = await freePort();
    hub = await startHub({ dataDir: dir, args: ["--forward", `127.0.0.1:${forwardPort}=prod/echo`] });
    await hub.waitForMsg("forward listening");
    proxy = await startTinyproxy(dir, hub.port, auth);
    const h = hub;
    await fn({
      dir,
      hub: h,
      proxy,
      echo,
      added,
      forwardPort,
      agents,
      agent: (proxyEnv) => {
        const a = startAgent({
          hubUrl: h.url,
          cluster: "prod",
          token: added.token,
          fingerprint: added.fingerprint,
          caFile: added.caFile,
          publish: [`echo=127.0.0.1:${echo.port}`],
          // Whatever the test runner's environment holds, only these proxy settings apply.
          env: {
            HTTPS_PROXY: "",
            HTTP_PROXY: "",
            NO_PROXY: "",
            https_proxy: "",
            http_proxy: "",
            no_proxy: "",
            // Deno's own update check would go through the proxy too and muddle its log.
            DENO_NO_UPDATE_CHECK: "1",
            ...proxyEnv,
          },
        });
        agents.push(a);
        return a;
      },
    });
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await proxy?.stop();
    await hub?.stop();
    await echo.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends a pattern through the hub's forward and checks the echo. */
async function echoThroughForward(port: number, size = 256 * 1024): Promise<void> {
  const data = patternChunk(7, size);
  const back = await roundTrip(port, data);
  assert.equal(back.length, data.length);
  assert.ok(back.every((b, i) => b === data[i]), "echo differs from what was sent");
}

Deno.test("agent through tinyproxy (HTTPS_PROXY): the tunnel is a CONNECT and traffic flows", async () => {
  await withStack(undefined, async ({ hub, proxy, forwardPort, agent }) => {
    const a = agent({ HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` });
    const connected = await a.waitForMsg("connected to hub");
    assert.equal(connected.via, `http://127.0.0.1:${proxy.port}/`);
    assert.deepEqual(proxy.connects(hub.port), [`CONNECT 127.0.0.1:${hub.port} HTTP/1.1`]);
    await echoThroughForward(forwardPort);
    // One session, carried by that one CONNECT.
    assert.equal(hub.count("agent connected"), 1);
    assert.equal(proxy.connects(hub.port).length, 1);
  });
});

Deno.test("agent through tinyproxy with Basic auth: user:pass@ is sent and never logged", async () => {
  const auth = { user: "tower", pass: "s3cret-pass" };
  await withStack(auth, async ({ hub, proxy, forwardPort, agent }) => {
    const a = agent({ HTTPS_PROXY: `http://${auth.user}:${auth.pass}@127.0.0.1:${proxy.port}` });
    const connected = await a.waitForMsg("connected to hub");
    assert.equal(connected.via, `http://***@127.0.0.1:${proxy.port}/`);
    assert.deepEqual(proxy.connects(hub.port), [`CONNECT 127.0.0.1:${hub.port} HTTP/1.1`]);
    await echoThroughForward(forwardPort);
    assert.ok(!a.dump().includes(auth.pass), "proxy password in the agent's log");
  });
});

/**
 * Waits for two refused attempts in a row (the backoff between them is below 2 s) and checks that the
 * proxy's answer is reported with `status` and that the agent never got through.
 */
async function refusedByProxy(a: TowerProcess, hub: HubProcess, proxy: Tinyproxy, status: RegExp) {
  const first = await a.waitFor((l) => l.msg === "cannot reach hub", "cannot reach hub");
  assert.match(String(first.error), /refused CONNECT to 127\.0\.0\.1:\d+: /);
  assert.match(String(first.error), status);
  await a.waitFor(
    (l) => l.msg === "cannot reach hub",
    "a second refused attempt",
    10_000,
    a.lines.indexOf(first) + 1,
  );
  assert.equal(a.count("connected to hub"), 0);
  assert.equal(hub.count("agent connected"), 0);
  assert.ok(proxy.connects(hub.port).length >= 2, proxy.lines.join("\n"));
  return String(first.error);
}

Deno.test("agent without proxy credentials gets a 407 from an auth proxy and never reaches the hub", async () => {
  await withStack({ user: "tower", pass: "right-pass" }, async ({ hub, proxy, agent }) => {
    const a = agent({ HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` });
    await refusedByProxy(a, hub, proxy, /: 407 Proxy Authentication Required$/);
  });
});

Deno.test("agent with a wrong proxy password is refused, says so, and never logs the password", async () => {
  await withStack({ user: "tower", pass: "right-pass" }, async ({ hub, proxy, agent }) => {
    const a = agent({ HTTPS_PROXY: `http://tower:wrong-pass@127.0.0.1:${proxy.port}` });
    // tinyproxy answers wrong credentials with 401 (a missing Proxy-Authorization gets 407).
    const error = await refusedByProxy(a, hub, proxy, /: 40[17] /);
    assert.ok(error.includes(`http://***@127.0.0.1:${proxy.port}/`), error);
    assert.ok(!a.dump().includes("wrong-pass"), "proxy password in the agent's log");
  });
});

Deno.test("NO_PROXY=127.0.0.1 makes the agent dial the hub directly", async () => {
  await withStack(undefined, async ({ hub, proxy, forwardPort, agent }) => {
    const a = agent({ HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`, NO_PROXY: "127.0.0.1" });
    const connected = await a.waitForMsg("connected to hub");
    assert.equal(connected.via, "direct");
    await echoThroughForward(forwardPort);
    assert.deepEqual(proxy.connects(hub.port), [], "the proxy saw a CONNECT");
  });
});
