/** splice over real TCP: half-close either way, and an abort on one side tearing down the other. @module */

import assert from "node:assert/strict";
import net from "node:net";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { splice, type SpliceStats } from "../../../lib/tunnel/splice.ts";
import { connect, hashServer, listen, type TestServer } from "../../helpers/net_servers.ts";
import { within } from "../../helpers/wait.ts";

/** A listener that splices each connection to a fresh connection to `targetPort`. */
function spliceFront(targetPort: number, onDone: (s: SpliceStats) => void): Promise<TestServer> {
  return listen(async (s) => splice(s, await connect(targetPort), onDone));
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
    await within(3000, "reply", ended);
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
      3000,
      "greeting",
      new Promise<void>((resolve, reject) => {
        client.on("data", (c: Uint8Array) => parts.push(c));
        client.once("end", resolve);
        client.once("error", reject);
      }),
    );
    assert.equal(Buffer.concat(parts).toString(), "greeting\n");
    // The client got EOF but its own sending side is still open.
    client.end("late words after the greeting");
    assert.equal(await within(3000, "late words", heard), "late words after the greeting");
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
