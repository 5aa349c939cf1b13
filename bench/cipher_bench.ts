/**
 * The cipher choice (part of scenario 1): the same ssh2 channel over loopback TCP with each candidate
 * cipher, in this runtime. The first in `cipherOrder` should be the fastest here.
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";
// @ts-types="@types/ssh2"
import ssh2 from "ssh2";
import { cipherOrder, sshAlgorithms } from "../lib/tunnel/mod.ts";
import { mbps, type Row } from "./_util.ts";
import { newHostKey } from "../lib/server/mod.ts";

/** MB/s of `bytes` through one SSH channel for each cipher in `cipherOrder`. */
export async function cipherBench(bytes: number): Promise<Row[]> {
  const rows: Row[] = [];
  const hostKey = newHostKey();
  for (const cipher of cipherOrder) {
    const received = Promise.withResolvers<number>();
    const server = new ssh2.Server({ hostKeys: [hostKey], algorithms: sshAlgorithms([cipher]) }, (conn) => {
      conn.on("authentication", (ctx) => ctx.accept());
      conn.on("tcpip", (accept) => {
        const ch = accept();
        let n = 0;
        ch.on("data", (c: Uint8Array) => void (n += c.length));
        ch.on("end", () => {
          received.resolve(n);
          ch.end();
        });
      });
      conn.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const client = new ssh2.Client();
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      client.once("ready", () => resolve()).once("error", reject);
      client.connect({ sock, username: "bench", password: "x", algorithms: sshAlgorithms([cipher]) });
    });
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
      client.forwardOut("127.0.0.1", 1, "sink", 1, (e, c) => (e ? reject(e) : resolve(c)))
    );
    const chunk = Buffer.alloc(1 << 20, 7);
    const t0 = performance.now();
    for (let sent = 0; sent < bytes; sent += chunk.length) {
      if (!ch.write(chunk)) await new Promise((r) => ch.once("drain", r));
    }
    ch.end();
    const n = await received.promise;
    rows.push({
      scenario: "cipher",
      case: `${cipher}, one ssh2 channel over TCP`,
      MBps: mbps(n, performance.now() - t0),
    });
    client.end();
    server.close();
    sock.destroy();
  }
  return rows;
}
