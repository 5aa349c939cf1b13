/** The control stream: JSON-line messages both ways, split chunks, bad lines and the 1 MiB line bound. @module */

import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { type ControlMessage, ControlStream } from "../../../lib/tunnel/control_stream.ts";

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
