/**
 * `duplexConnections`: an HTTP server that never listens keeps each connection handed to it alive
 * between requests (Deno's node:http server closes them after every response otherwise), and ends
 * them after their response once it is closed.
 */

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { duplexConnections } from "../../../lib/proxy/mod.ts";

/** A TCP connection whose server side is handed to `serve`; resolves with the client side. */
async function connected(serve: (s: net.Socket) => void): Promise<{ client: net.Socket; stop: () => void }> {
  const listener = net.createServer((s) => serve(s));
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const port = (listener.address() as net.AddressInfo).port;
  const client = net.connect(port, "127.0.0.1");
  await new Promise((resolve) => client.once("connect", resolve));
  return { client, stop: () => listener.close() };
}

/** Reads from `client` until a whole `content-length: 2` response arrived, or the connection ended. */
function response(client: net.Socket): Promise<{ text: string; ended: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    const done = (ended: boolean) => {
      client.off("data", onData);
      client.off("end", onEnd);
      resolve({ text, ended });
    };
    const onData = (c: Uint8Array) => {
      text += new TextDecoder().decode(c);
      const head = text.indexOf("\r\n\r\n");
      if (head >= 0 && text.length >= head + 4 + 2) done(false);
    };
    const onEnd = () => done(true);
    client.on("data", onData);
    client.once("end", onEnd);
  });
}

/** Whether `client` next ends (the server closed it) or gets an answer. */
function endsOrAnswers(client: net.Socket): Promise<"ended" | "answered"> {
  return new Promise((resolve) => {
    client.once("end", () => resolve("ended"));
    client.once("close", () => resolve("ended"));
    client.once("data", () => resolve("answered"));
  });
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nhost: agent\r\n\r\n`;

Deno.test("duplexConnections: one connection carries request after request", async () => {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-length": "2" });
    res.end("ok");
  });
  const connections = duplexConnections(server);
  const { client, stop } = await connected(connections.serve);
  try {
    for (const path of ["/a", "/b", "/c"]) {
      const answer = response(client);
      client.write(get(path));
      const { text, ended } = await answer;
      assert.equal(ended, false, `the connection ended after ${path}`);
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(text, /\r\nconnection: keep-alive\r\n/i);
    }
    // A fourth request on the same connection is still read and answered, not refused by a closed socket.
    const next = endsOrAnswers(client);
    client.write(get("/d"));
    assert.equal(await next, "answered");
  } finally {
    client.destroy();
    connections.close();
    stop();
  }
});

Deno.test("duplexConnections: once the server is closed, a connection ends after its response", async () => {
  let answer: (() => void) | undefined;
  const asked = Promise.withResolvers<void>();
  const server = http.createServer((req, res) => {
    req.resume();
    answer = () => {
      res.writeHead(200, { "content-length": "2" });
      res.end("ok");
    };
    asked.resolve();
  });
  const connections = duplexConnections(server);
  const { client, stop } = await connected(connections.serve);
  try {
    const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
    const first = response(client);
    client.write(get("/a"));
    await asked.promise;
    connections.close(); // while the request is in flight
    answer!();
    assert.match((await first).text, /^HTTP\/1\.1 200 OK\r\n/);
    await ended;
  } finally {
    client.destroy();
    stop();
  }
});
