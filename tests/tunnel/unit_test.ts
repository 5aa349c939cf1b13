/** Tunnel building blocks without a hub: backoff, proxy choice, fingerprints, control stream, splice. @module */

import assert from "node:assert/strict";
import net from "node:net";
import { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { ConfigError } from "../../lib/config/mod.ts";
import {
  Backoff,
  bypassesProxy,
  checkFingerprint,
  type ControlMessage,
  ControlStream,
  DatagramDecoder,
  encodeDatagram,
  fingerprintOfBlob,
  fingerprintOfKey,
  maxDatagramBytes,
  proxyFor,
  redactUrl,
  splice,
  type SpliceStats,
} from "../../lib/tunnel/mod.ts";
import { connect, hashServer, patternChunk, type TestServer } from "../helpers/net_servers.ts";

// ---------------------------------------------------------------------------------------------------
// Backoff

Deno.test("Backoff: full jitter stays in [0, ceiling) and the ceiling doubles up to the cap", () => {
  let r = 0;
  const b = new Backoff({ baseMs: 100, capMs: 1000, resetAfterMs: 60_000, random: () => r });
  // random → 0 gives the floor of the range; random just under 1 gives just under the ceiling.
  const ceilings = [];
  for (let i = 0; i < 7; i++) {
    r = 0.999999;
    const top = b.next();
    ceilings.push(top + 1);
  }
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(b.attempts, 7);
  r = 0;
  assert.equal(b.next(), 0, "the range starts at 0");
  r = 0.5;
  assert.equal(b.next(), 500);
  for (let i = 0; i < 200; i++) {
    r = Math.random();
    const d = b.next();
    assert.ok(d >= 0 && d < 1000, `${d} out of [0, 1000)`);
    assert.ok(Number.isInteger(d));
  }
});

Deno.test("Backoff: huge attempt counts do not overflow the cap", () => {
  const b = new Backoff({ baseMs: 1000, capMs: 30_000, resetAfterMs: 60_000, random: () => 0.999999 });
  for (let i = 0; i < 2000; i++) assert.ok(b.next() < 30_000);
});

Deno.test("Backoff: a long-lived connection resets the attempts; a short one does not", () => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000, resetAfterMs: 60_000, random: () => 0.999999 });
  b.next();
  b.next();
  b.next();
  assert.equal(b.attempts, 3);
  b.connectionLived(59_999);
  assert.equal(b.attempts, 3);
  assert.equal(b.next(), 799, "still doubling after a short connection");
  b.connectionLived(60_000);
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 99, "back to the base ceiling");
});

// ---------------------------------------------------------------------------------------------------
// Proxy choice

const wss = new URL("wss://hub.example.com:8443/tunnel");
const ws = new URL("ws://hub.example.com:8080/tunnel");

Deno.test("proxyFor: wss uses HTTPS_PROXY (then HTTP_PROXY), ws uses HTTP_PROXY only", () => {
  const env = { httpsProxy: "http://secure-proxy:3128", httpProxy: "http://plain-proxy:3128" };
  assert.equal(proxyFor(wss, env)?.host, "secure-proxy:3128");
  assert.equal(proxyFor(ws, env)?.host, "plain-proxy:3128");
  assert.equal(proxyFor(wss, { httpProxy: "http://plain-proxy:3128" })?.host, "plain-proxy:3128");
  assert.equal(proxyFor(ws, { httpsProxy: "http://secure-proxy:3128" }), undefined);
  assert.equal(proxyFor(wss, {}), undefined);
  assert.equal(proxyFor(wss, { httpsProxy: "" }), undefined);
  // A bare host:port is taken as http://.
  const bare = proxyFor(wss, { httpsProxy: "proxy.corp:8080" });
  assert.equal(bare?.protocol, "http:");
  assert.equal(bare?.host, "proxy.corp:8080");
  const withAuth = proxyFor(wss, { httpsProxy: "http://user:p%40ss@proxy:3128" });
  assert.equal(withAuth?.username, "user");
  assert.equal(withAuth?.password, "p%40ss");
});

Deno.test("proxyFor: NO_PROXY wins over a configured proxy", () => {
  const env = { httpsProxy: "http://proxy:3128", noProxy: "localhost,.example.com" };
  assert.equal(proxyFor(wss, env), undefined);
  assert.equal(proxyFor(new URL("wss://other.org/tunnel"), env)?.host, "proxy:3128");
});

Deno.test("proxyFor: an https:// proxy is refused with a clear ConfigError that hides the password", () => {
  assert.throws(() => proxyFor(wss, { httpsProxy: "https://user:hunter2@proxy:3128" }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /only http:\/\/ proxies \(HTTP CONNECT\) are supported/);
    assert.ok(e.message.includes("user:***@proxy:3128"), e.message);
    assert.ok(!e.message.includes("hunter2"), e.message);
    return true;
  });
  assert.throws(() => proxyFor(wss, { httpsProxy: "socks5://proxy:1080" }), ConfigError);
  assert.throws(() => proxyFor(wss, { httpsProxy: "http://[bad" }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /is not a URL/);
    return true;
  });
});

Deno.test("redactUrl hides passwords and keeps the rest", () => {
  assert.equal(redactUrl("http://user:secret@proxy:3128"), "http://user:***@proxy:3128/");
  assert.equal(redactUrl("user:secret@proxy:3128"), "http://user:***@proxy:3128/");
  assert.equal(redactUrl("http://proxy:3128"), "http://proxy:3128/");
  assert.equal(redactUrl("http://user@proxy:3128"), "http://user@proxy:3128/");
  assert.equal(redactUrl("http://[bad"), "<unparseable>");
});

Deno.test("bypassesProxy: *, exact host, .suffix, host:port, IP", () => {
  const t = (url: string, list: string) => bypassesProxy(new URL(url), list);
  assert.ok(t("wss://anything.io/tunnel", "*"));
  assert.ok(t("wss://hub.example.com/tunnel", "hub.example.com"));
  assert.ok(t("wss://HUB.Example.com/tunnel", "hub.example.COM"), "case-insensitive");
  assert.ok(!t("wss://hub.example.com/tunnel", "other.example.com"));
  // Suffixes, with or without a leading dot or *.
  assert.ok(t("wss://hub.example.com/tunnel", ".example.com"));
  assert.ok(t("wss://hub.example.com/tunnel", "*.example.com"));
  assert.ok(t("wss://a.b.example.com/tunnel", "example.com"));
  assert.ok(!t("wss://notexample.com/tunnel", "example.com"), "a suffix matches whole labels only");
  assert.ok(!t("wss://example.com.evil.org/tunnel", ".example.com"));
  // host:port matches that port only; wss defaults to 443, ws to 80.
  assert.ok(t("wss://hub.example.com:8443/tunnel", "hub.example.com:8443"));
  assert.ok(!t("wss://hub.example.com:9443/tunnel", "hub.example.com:8443"));
  assert.ok(t("wss://hub.example.com/tunnel", "hub.example.com:443"));
  assert.ok(t("ws://hub.example.com/tunnel", "hub.example.com:80"));
  assert.ok(!t("ws://hub.example.com/tunnel", "hub.example.com:443"));
  // IPs.
  assert.ok(t("ws://127.0.0.1:8080/tunnel", "127.0.0.1"));
  assert.ok(t("ws://127.0.0.1:8080/tunnel", "127.0.0.1:8080"));
  assert.ok(!t("ws://127.0.0.2:8080/tunnel", "127.0.0.1"));
  assert.ok(t("ws://[::1]:8080/tunnel", "::1"));
  // Lists: commas and/or spaces, empty entries ignored.
  assert.ok(t("wss://hub.example.com/tunnel", " localhost , ,hub.example.com "));
  assert.ok(t("wss://hub.example.com/tunnel", "localhost hub.example.com"));
  assert.ok(!t("wss://hub.example.com/tunnel", ""));
  assert.ok(!t("wss://hub.example.com/tunnel", " , "));
});

// ---------------------------------------------------------------------------------------------------
// Fingerprints

/** An ed25519 pair ssh2 can read back (it writes an unreadable one ~3 times in 1,000; see newHostKey). */
function parseableKeyPair(): { private: string; public: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync("ed25519");
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error)) return pair;
  }
}

Deno.test("fingerprintOfKey matches OpenSSH's SHA256 of the public key blob, for private and public text", async () => {
  const pair = parseableKeyPair();
  const fromPrivate = fingerprintOfKey(pair.private);
  const fromPublic = fingerprintOfKey(pair.public);
  assert.equal(fromPrivate, fromPublic);
  assert.match(fromPrivate, /^SHA256:[A-Za-z0-9+/]{43}$/);
  // Independently: the base64 field of the public line is the blob.
  const blob = Buffer.from(pair.public.trim().split(/\s+/)[1]!, "base64");
  const expected = "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
  assert.equal(fromPrivate, expected);
  assert.equal(fingerprintOfBlob(blob), expected);
  assert.equal(checkFingerprint(fromPrivate), fromPrivate);
  // And as ssh-keygen itself prints it.
  const keygen = await new Deno.Command("ssh-keygen", {
    args: ["-l", "-E", "sha256", "-f", "/dev/stdin"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = keygen.stdin.getWriter();
  await w.write(new TextEncoder().encode(pair.public + "\n"));
  await w.close();
  const out = await keygen.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).split(/\s+/)[1], fromPrivate);
  assert.notEqual(fingerprintOfKey(parseableKeyPair().private), fromPrivate);
});

Deno.test("fingerprintOfKey refuses text that is not a key", () => {
  assert.throws(() => fingerprintOfKey("not a key"));
});

Deno.test("checkFingerprint refuses anything but SHA256: and 43 base64 characters, saying where to get one", () => {
  const good = "SHA256:" + "A".repeat(43);
  assert.equal(checkFingerprint(good), good);
  for (
    const bad of [
      "",
      "SHA256:abc",
      good + "=",
      good + "A",
      "sha256:" + "A".repeat(43),
      "MD5:aa:bb",
      "A".repeat(50),
      "SHA256:" + "-".repeat(43),
    ]
  ) {
    assert.throws(() => checkFingerprint(bad), (e: unknown) => {
      assert.ok(e instanceof ConfigError, bad);
      assert.ok(e.message.includes(`'${bad}'`), e.message);
      assert.ok(e.message.includes("main_server.ts fingerprint"), e.message);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Control stream

/** Two connected in-memory duplexes; each write reaches the peer on a later turn, as a socket would. */
function duplexPair(): [Duplex, Duplex] {
  const make = (): Duplex & { peer?: Duplex } =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        const peer = (this as Duplex & { peer?: Duplex }).peer!;
        setTimeout(() => {
          peer.push(chunk);
          cb();
        }, 0);
      },
      final(cb) {
        const peer = (this as Duplex & { peer?: Duplex }).peer!;
        setTimeout(() => {
          peer.push(null);
          cb();
        }, 0);
      },
    });
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** Collects messages and lets a test wait for the n-th. */
function collector(stream: ControlStream): { got: ControlMessage[]; until(n: number): Promise<void> } {
  const got: ControlMessage[] = [];
  let check = () => {};
  stream.onMessage((m) => {
    got.push(m);
    check();
  });
  return {
    got,
    until: (n) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages`)), 2000);
        check = () => {
          if (got.length >= n) {
            clearTimeout(timer);
            resolve();
          }
        };
        check();
      }),
  };
}

function closedWith(stream: ControlStream): Promise<Error | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("stream did not close")), 2000);
    stream.onClose((e) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
}

Deno.test("ControlStream carries JSON-line messages both ways and reports the close", async () => {
  const [a, b] = duplexPair();
  const left = new ControlStream(a);
  const right = new ControlStream(b);
  const fromLeft = collector(right);
  const fromRight = collector(left);
  assert.equal(left.send({ type: "hello", version: "0.1.0", endpoints: ["echo", "kubernetes"] }), true);
  left.send({ type: "ping", text: "line\nbreak and ünïcode" });
  right.send({ type: "reconnect", reason: "maintenance" });
  await fromLeft.until(2);
  await fromRight.until(1);
  assert.deepEqual(fromLeft.got, [
    { type: "hello", version: "0.1.0", endpoints: ["echo", "kubernetes"] },
    { type: "ping", text: "line\nbreak and ünïcode" },
  ]);
  assert.deepEqual(fromRight.got, [{ type: "reconnect", reason: "maintenance" }]);

  const leftClosed = closedWith(left);
  const rightClosed = closedWith(right);
  left.close();
  assert.equal(await leftClosed, undefined);
  assert.equal(left.send({ type: "late" }), false, "a closed stream refuses to send");
  // The peer sees the end of its input; destroying it completes its close.
  b.destroy();
  assert.equal(await rightClosed, undefined);
  let late = false;
  right.onClose(() => void (late = true));
  assert.ok(late, "onClose after the close runs at once");
});

Deno.test("ControlStream reassembles messages split across chunks and skips blank lines", async () => {
  const [a, b] = duplexPair();
  const stream = new ControlStream(b);
  const c = collector(stream);
  const text = '\n{"type":"one","n":1}\n\n{"type":"tw' + 'o","n":2}\n{"type":"three"}\n';
  for (const piece of [text.slice(0, 5), text.slice(5, 23), text.slice(23, 30), text.slice(30)]) {
    a.write(piece);
  }
  await c.until(3);
  assert.deepEqual(c.got, [{ type: "one", n: 1 }, { type: "two", n: 2 }, { type: "three" }]);
  const closed = closedWith(stream);
  stream.close();
  await closed;
  a.destroy();
});

Deno.test("ControlStream closes with an error on a line that is not JSON or has no type", async () => {
  for (
    const [line, why] of [["not json\n", /not JSON/], ['{"no":"type"}\n', /has no type/], [
      "[1]\n",
      /has no type/,
    ]] as const
  ) {
    const [a, b] = duplexPair();
    const stream = new ControlStream(b);
    const c = collector(stream);
    const closed = closedWith(stream);
    a.write('{"type":"ok"}\n' + line + '{"type":"after"}\n');
    const error = await closed;
    assert.match(String(error?.message), why);
    assert.deepEqual(c.got, [{ type: "ok" }], "nothing after the bad line is delivered");
    a.destroy();
  }
});

Deno.test("ControlStream refuses a line longer than 1 MiB", async () => {
  const [a, b] = duplexPair();
  const stream = new ControlStream(b);
  const closed = closedWith(stream);
  a.write('{"type":"x","pad":"' + "y".repeat((1 << 20) + 10));
  assert.match(String((await closed)?.message), /too long/);
  a.destroy();
});

// ---------------------------------------------------------------------------------------------------
// Splice over real TCP

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(p: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A listener that splices each connection to a fresh connection to `targetPort`. */
function spliceFront(targetPort: number, onDone: (s: SpliceStats) => void): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, async (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    const upstream = await connect(targetPort);
    splice(s, upstream, onDone);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        sockets,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }));
  });
}

function statsPromise(): { onDone: (s: SpliceStats) => void; stats: Promise<SpliceStats> } {
  let onDone: (s: SpliceStats) => void = () => {};
  const stats = new Promise<SpliceStats>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("splice never finished")), 5000);
    onDone = (s) => {
      clearTimeout(timer);
      resolve(s);
    };
  });
  return { onDone, stats };
}

Deno.test("splice: the client ends its sending side and still receives the reply", async () => {
  const upstream = await hashServer();
  const { onDone, stats } = statsPromise();
  const front = await spliceFront(upstream.port, onDone);
  try {
    const client = await connect(front.port);
    const payload = new TextEncoder().encode("request body ".repeat(5000));
    const received: Uint8Array[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      client.on("data", (c: Uint8Array) => received.push(c));
      client.once("end", resolve);
      client.once("error", reject);
    });
    client.end(payload);
    await within(ended, "reply");
    client.destroy();
    const reply = Buffer.concat(received).toString();
    const hex = createHash("sha256").update(payload).digest("hex");
    assert.equal(reply, `${hex} ${payload.length}\n`);
    const s = await stats;
    assert.equal(s.aToB, payload.length);
    assert.equal(s.bToA, reply.length);
    assert.equal(s.error, undefined);
  } finally {
    await front.close();
    await upstream.close();
  }
});

Deno.test("splice: the server ends first and still receives what the client sends afterwards", async () => {
  // The upstream greets, ends its sending side at once, and reports what it then reads.
  const sockets = new Set<net.Socket>();
  let resolveHeard: (text: string) => void = () => {};
  const heard = new Promise<string>((r) => resolveHeard = r);
  const greeter = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    const parts: Uint8Array[] = [];
    s.on("data", (c: Uint8Array) => parts.push(c));
    s.on("end", () => resolveHeard(Buffer.concat(parts).toString()));
    s.end("greeting\n");
  });
  const port = await new Promise<number>((r) =>
    greeter.listen(0, "127.0.0.1", () => r((greeter.address() as net.AddressInfo).port))
  );
  const { onDone, stats } = statsPromise();
  const front = await spliceFront(port, onDone);
  try {
    const client = await connect(front.port);
    const parts: Uint8Array[] = [];
    await within(
      new Promise<void>((resolve, reject) => {
        client.on("data", (c: Uint8Array) => parts.push(c));
        client.once("end", resolve);
        client.once("error", reject);
      }),
      "greeting",
    );
    assert.equal(Buffer.concat(parts).toString(), "greeting\n");
    // The client got EOF but its own sending side is still open.
    client.end("late words after the greeting");
    assert.equal(await within(heard, "late words"), "late words after the greeting");
    const s = await stats;
    assert.equal(s.aToB, "late words after the greeting".length);
    assert.equal(s.bToA, "greeting\n".length);
    client.destroy();
  } finally {
    await front.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => greeter.close(() => r()));
  }
});

Deno.test("splice: an abort on one side tears down the other", async () => {
  const upstream = await hashServer();
  const { onDone, stats } = statsPromise();
  const front = await spliceFront(upstream.port, onDone);
  try {
    const client = await connect(front.port);
    client.write("partial");
    // Wait until the upstream has its side of the connection, then kill it.
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (upstream.sockets.size > 0) {
          clearInterval(timer);
          resolve();
        }
      }, 10);
      setTimeout(() => {
        clearInterval(timer);
        reject(new Error("upstream never saw the connection"));
      }, 3000);
    });
    // The front socket is destroyed, so the client sees its input end (a FIN: TCP cannot say more).
    const clientEnded = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("client input never ended")), 3000);
      client.once("end", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    client.on("error", () => {});
    client.resume();
    // A reset, not a FIN: the upstream is gone, not merely done sending.
    for (const s of upstream.sockets) s.resetAndDestroy();
    const s = await stats;
    assert.match(String(s.error?.message), /ECONNRESET/);
    assert.equal(s.aToB, "partial".length);
    await clientEnded;
    client.destroy();
  } finally {
    await front.close();
    await upstream.close();
  }
});

Deno.test("datagram framing: 0 B, 1 B and 64 KiB datagrams survive any split; a longer frame is refused", () => {
  const sizes = [0, 1, 512, maxDatagramBytes];
  const datagrams = sizes.map((n, i) => patternChunk(i + 1, n));
  const stream = Buffer.concat(datagrams.map((d) => encodeDatagram(d)));
  for (const step of [1, 3, 4, 4096, 65_539, stream.length]) {
    const decoder = new DatagramDecoder();
    const got: Uint8Array[] = [];
    for (let off = 0; off < stream.length; off += step) {
      got.push(...decoder.push(stream.subarray(off, off + step)));
    }
    assert.deepEqual(got.map((d) => d.length), sizes, `split every ${step} bytes`);
    got.forEach((d, i) => assert.equal(Buffer.compare(d, datagrams[i]!), 0));
  }
  assert.throws(() => encodeDatagram(new Uint8Array(maxDatagramBytes + 1)), RangeError);
  const tooLong = Buffer.alloc(4);
  tooLong.writeUInt32BE(maxDatagramBytes + 1);
  assert.throws(() => new DatagramDecoder().push(tooLong), /more than 65536/);
});
