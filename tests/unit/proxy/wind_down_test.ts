/**
 * Winding down a proxied watch (lib/proxy/reverse_proxy.ts with an EOF-framed upstream, as a replica
 * relaying through a draining peer has): the stream ends cleanly right after a complete event only when
 * asked to wind down — by the relay's notice or by the hub's own drain — and is cut when its upstream
 * ends or dies in any other way (a dead agent must not look like a normal end).
 */

import assert from "node:assert/strict";
import net from "node:net";
import http from "node:http";
import { Buffer } from "node:buffer";
import { DuplexClients, ReverseProxy } from "../../../lib/proxy/mod.ts";
import { type EofFramed, eofFramed, windDownEvent } from "../../../lib/tunnel/mod.ts";
import { statusResponder } from "../../../lib/kube/status.ts";

/** What the upstream side of one scenario does once the request arrived, and what the proxy's side does. */
interface Script {
  /** Runs against the upstream's framed connection; `seen(text)` resolves once the client got `text`. */
  upstream(framed: EofFramed, seen: (text: string) => Promise<void>, local: () => void): Promise<void>;
}

/** How the client saw the stream: its body and whether it ended cleanly (the chunked stream's end). */
interface Seen {
  body: string;
  clean: boolean;
}

/** Runs one scenario: client → node:http → ReverseProxy (a watch) → framed TCP → upstream. */
async function scenario(script: Script, contentType = "application/json"): Promise<Seen> {
  let upstreamDone: Promise<void> = Promise.resolve();
  let body = "";
  const waiters = new Set<() => void>();
  const seen = (text: string) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (!body.includes(text)) return;
        waiters.delete(check);
        resolve();
      };
      waiters.add(check);
      check();
    });
  let localWindDown = () => {};
  const backend = net.createServer((s) => {
    s.on("error", () => {});
    const framed = eofFramed(s);
    framed.on("error", () => {});
    framed.once("data", () => {
      framed.write(`HTTP/1.1 200 OK\r\nContent-Type: ${contentType}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      upstreamDone = script.upstream(framed, seen, () => localWindDown());
    });
  });
  await new Promise<void>((r) => backend.listen(0, "127.0.0.1", r));
  const upstream = new DuplexClients<null>({
    dial: () =>
      new Promise((resolve, reject) => {
        const s = net.connect((backend.address() as net.AddressInfo).port, "127.0.0.1");
        s.once("connect", () => resolve({ duplex: eofFramed(s), carrier: null }));
        s.once("error", reject);
      }),
  });
  const proxy = new ReverseProxy(statusResponder("backend: "));
  const server = http.createServer((req, res) => {
    localWindDown = () => res.emit(windDownEvent);
    void proxy.request(req, res, { upstream, path: "/watch", headers: {}, endsBetweenMessages: true });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const clean = await new Promise<boolean>((resolve) => {
      const req = http.get(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/watch`, (res) => {
        res.on("data", (c: Uint8Array) => {
          body += new TextDecoder().decode(c);
          for (const w of [...waiters]) w();
        });
        res.on("end", () => resolve(res.complete));
        res.on("error", () => resolve(false));
      });
      req.on("error", () => resolve(false));
    });
    await upstreamDone;
    return { body, clean };
  } finally {
    upstream.close();
    await new Promise((r) => server.close(r));
    await new Promise((r) => backend.close(r));
  }
}

/** One chunk of a chunked body. */
const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;

/** Waits until the framed connection closed (the proxy gave it up). */
const closed = (framed: EofFramed) =>
  new Promise<void>((r) => framed.closed ? r() : framed.once("close", () => r()));

Deno.test("wind-down: the relay's notice between two events ends the watch cleanly at once", async () => {
  const got = await scenario({
    upstream: async (framed, seen) => {
      framed.write(chunk('{"n":1}\n'));
      await seen('{"n":1}\n');
      framed.windDown();
      await closed(framed);
    },
  });
  assert.deepEqual(got, { body: '{"n":1}\n', clean: true });
});

Deno.test("wind-down: a notice in the middle of an event lets that event finish, and nothing after it", async () => {
  const got = await scenario({
    upstream: async (framed, seen) => {
      framed.write(chunk('{"n":1}\n{"n":'));
      await seen('{"n":');
      framed.windDown();
      // The rest of event 2 and all of event 3 in one chunk: only event 2's tail goes out.
      framed.write(chunk('2}\n{"n":3}\n'));
      await closed(framed);
    },
  });
  assert.deepEqual(got, { body: '{"n":1}\n{"n":2}\n', clean: true });
});

Deno.test("wind-down: a notice before the first event ends the watch before it", async () => {
  const got = await scenario({
    upstream: async (framed) => {
      framed.windDown();
      await closed(framed);
    },
  });
  assert.deepEqual(got, { body: "", clean: true });
});

Deno.test("wind-down: the hub's own drain (the event on the response) also waits for the event's end", async () => {
  const got = await scenario({
    upstream: async (framed, seen, local) => {
      framed.write(chunk('{"n":1}\n{"n":'));
      await seen('{"n":');
      local();
      framed.write(chunk("2}"));
      framed.write(chunk('\n{"n":3}\n'));
      await closed(framed);
    },
  });
  assert.deepEqual(got, { body: '{"n":1}\n{"n":2}\n', clean: true });
});

Deno.test("wind-down: a relay that goes before the event in progress is whole cuts the watch", async () => {
  const got = await scenario({
    upstream: async (framed, seen) => {
      framed.write(chunk('{"n":1}\n{"n":'));
      await seen('{"n":');
      framed.windDown();
      framed.destroy();
    },
  });
  assert.deepEqual(got, { body: '{"n":1}\n{"n":', clean: false });
});

Deno.test("wind-down: without the notice, an upstream that ends (EOF) or dies right after an event cuts the watch", async () => {
  for (const lose of ["eof", "destroy"] as const) {
    const got = await scenario({
      upstream: async (framed, seen) => {
        framed.write(chunk('{"n":1}\n'));
        await seen('{"n":1}\n');
        // The agent's channel ending is an EOF frame; an agent that died loses the connection.
        if (lose === "eof") framed.end();
        else framed.destroy();
        await closed(framed);
      },
    });
    assert.deepEqual(got, { body: '{"n":1}\n', clean: false }, lose);
  }
});

Deno.test("wind-down: a protobuf watch ends after the frame in progress, whatever bytes its payload holds", async () => {
  // Each frame: a 4-byte big-endian length, then the payload (here with newlines inside, as protobuf may).
  const frame = (payload: string) => {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, payload.length);
    return new TextDecoder("latin1").decode(head) + payload;
  };
  const one = frame("a\nb\n"), two = frame("c\n\nd"), three = frame("e");
  const got = await scenario({
    upstream: async (framed, seen) => {
      framed.write(chunk(one + two.slice(0, 6)));
      await seen(two.slice(0, 6));
      framed.windDown();
      framed.write(chunk(two.slice(6) + three));
      await closed(framed);
    },
  }, "application/vnd.kubernetes.protobuf;stream=watch");
  assert.deepEqual(got, { body: one + two, clean: true });
});

Deno.test("wind-down: a stream whose messages cannot be told apart is not wound down (cut with its upstream)", async () => {
  const got = await scenario({
    upstream: async (framed, seen) => {
      framed.write(chunk("x\n"));
      await seen("x\n");
      framed.windDown();
      framed.write(chunk("y\n"));
      await seen("y\n");
      framed.end();
      await closed(framed);
    },
  }, "application/cbor-seq");
  assert.deepEqual(got, { body: "x\ny\n", clean: false });
});

Deno.test("wind-down: an upgraded WebSocket relayed through a draining replica gets Close 1001 after the frame in progress", async () => {
  const frame = (text: string) => Buffer.concat([Buffer.from([0x82, text.length]), Buffer.from(text)]);
  const first = frame("abcdef");
  const backend = net.createServer((s) => {
    s.on("error", () => {});
    const framed = eofFramed(s);
    framed.on("error", () => {});
    framed.once("data", () => {
      framed.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      // Half of a frame; once the client answered it (the stream is spliced), the notice, the other half
      // and a frame that must not reach the client.
      framed.write(first.subarray(0, 4));
      framed.once("data", () => {
        framed.windDown();
        framed.write(Buffer.concat([first.subarray(4), frame("late")]));
      });
    });
  });
  await new Promise<void>((r) => backend.listen(0, "127.0.0.1", r));
  const upstream = new DuplexClients<null>({
    dial: () =>
      new Promise((resolve, reject) => {
        const s = net.connect((backend.address() as net.AddressInfo).port, "127.0.0.1");
        s.once("connect", () => resolve({ duplex: eofFramed(s), carrier: null }));
        s.once("error", reject);
      }),
  });
  const proxy = new ReverseProxy(statusResponder("backend: "));
  const server = http.createServer();
  server.on("upgrade", (req, socket, head) => {
    void proxy.upgrade(req, socket, head, { upstream, path: "/exec", headers: {}, framedClose: true });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: "127.0.0.1" });
    const got: Buffer[] = [];
    let answered = false;
    client.on("data", (c: Buffer) => {
      got.push(c);
      const all = Buffer.concat(got);
      const head = all.indexOf("\r\n\r\n");
      if (!answered && head >= 0 && all.length >= head + 4 + 4) {
        answered = true;
        client.write("x");
      }
    });
    const fin = await new Promise<boolean>((resolve) => {
      client.once("end", () => resolve(true));
      client.once("close", () => resolve(false));
      client.write(
        "GET /exec HTTP/1.1\r\nHost: hub\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      );
    });
    client.destroy();
    const all = Buffer.concat(got);
    const body = all.subarray(all.indexOf("\r\n\r\n") + 4);
    assert.ok(fin, "the hub's side ended with FIN");
    assert.equal(Buffer.compare(body.subarray(0, first.length), first), 0, "the frame in progress, whole");
    const close = body.subarray(first.length);
    assert.equal(close[0], 0x88);
    assert.equal(close.readUInt16BE(2), 1001);
    assert.equal(close.length, 2 + close[1]!, "nothing after the Close frame");
  } finally {
    upstream.close();
    await new Promise((r) => server.close(r));
    await new Promise((r) => backend.close(r));
  }
});
