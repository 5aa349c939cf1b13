/**
 * Real backends behind test Services, and raw requests to the hub with a user's TLS credentials, shared
 * by the e2e tests that reach a cluster's Services.
 * @module
 */

import https from "node:https";
import tls from "node:tls";
import { Buffer } from "node:buffer";
import { eofFramedUpgrade } from "../../lib/tunnel/mod.ts";
import YAML from "yaml";
import { type Backend, spawnListening } from "./tower_env.ts";
import type { TestCluster } from "../cluster/cluster.ts";

/**
 * Starts a tiny Deno server inside the namespace on 0.0.0.0:`port`. `http` answers every request with
 * JSON naming the method, path, headers and how many requests it has served, and echoes WebSocket
 * messages; `bufecho` reads until the client half-closes, then sends everything back and closes.
 */
export async function startBackend(
  cluster: TestCluster,
  mode: "http" | "bufecho",
  port: number,
): Promise<Backend> {
  const code = mode === "http"
    ? `
      let served = 0;
      Deno.serve({ port: ${port}, hostname: "0.0.0.0", onListen: () => console.log("listening") }, (req) => {
        served++;
        if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
          const { socket, response } = Deno.upgradeWebSocket(req);
          socket.onmessage = (e) => socket.send("echo:" + e.data);
          return response;
        }
        const u = new URL(req.url);
        return Response.json({
          method: req.method,
          path: u.pathname + u.search,
          headers: Object.fromEntries(req.headers),
          served,
        });
      });
    `
    : `
      import net from "node:net";
      net.createServer({ allowHalfOpen: true }, (s) => {
        const parts = [];
        s.on("error", () => {});
        s.on("data", (c) => parts.push(c));
        s.on("end", () => {
          for (const p of parts) s.write(p);
          s.end();
        });
      }).listen(${port}, "0.0.0.0", () => console.log("listening"));
    `;
  return await spawnListening(cluster, code, `backend ${mode}:${port}`);
}

/** A selector-less ClusterIP Service plus its EndpointSlice at the namespace's address. */
export function serviceWithSlice(
  cluster: TestCluster,
  namespace: string,
  name: string,
  port: number,
  targetPort: number,
): unknown[] {
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace },
      spec: { ports: [{ name: "main", port, targetPort, protocol: "TCP" }] },
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${name}-1`, namespace, labels: { "kubernetes.io/service-name": name } },
      addressType: "IPv4",
      ports: [{ name: "main", port: targetPort, protocol: "TCP" }],
      endpoints: [{ addresses: [cluster.nsAddress], conditions: { ready: true } }],
    },
  ];
}

/** Creates namespace `web` and in it the Service `echo` on port 9000 with its EndpointSlice. */
export async function applyEchoService(cluster: TestCluster): Promise<void> {
  const created = await cluster.kubectl(["create", "namespace", "web"]);
  if (created.code !== 0) throw new Error(`create namespace web: ${created.stderr}`);
  const applied = await cluster.kubectl(["apply", "-f", "-"], {
    stdin: JSON.stringify({
      apiVersion: "v1",
      kind: "List",
      items: serviceWithSlice(cluster, "web", "echo", 9000, 9000),
    }),
  });
  if (applied.code !== 0) throw new Error(`apply Service web/echo: ${applied.stderr}`);
}

/** TLS options for a hub client: the hub CA and, for a certificate user, the client key pair. */
export interface Tls {
  ca: string;
  cert?: string;
  key?: string;
}

/** A GET to the hub at 127.0.0.1; resolves with status and body text. */
export function hubRequest(
  port: number,
  path: string,
  tls: Tls,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({
      host: "127.0.0.1",
      port,
      path,
      ...tls,
      agent: false,
      headers: { connection: "close", ...headers },
    }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => body += c);
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`${path}: no answer in 30 s`)));
    req.on("error", reject);
  });
}

/** The TLS options of a kubeconfig written by `kubeconfig --user` (client certificate user). */
export async function tlsOfKubeconfig(kubeconfig: string, ca: string): Promise<Tls> {
  const kc = YAML.parse(await Deno.readTextFile(kubeconfig));
  return {
    ca,
    cert: atob(kc.users[0].user["client-certificate-data"]),
    key: atob(kc.users[0].user["client-key-data"]),
  };
}

/** Opens a TLS connection to the hub and sends `head`; resolves with the socket and the response head. */
export function rawUpgrade(
  port: number,
  creds: Tls,
  head: string,
): Promise<{ socket: tls.TLSSocket; status: number }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ...creds, servername: "localhost" });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("no upgrade answer in 20 s"));
    }, 20_000);
    const onData = (c: Uint8Array) => {
      got = Buffer.concat([got, c]);
      const end = got.indexOf("\r\n\r\n");
      if (end < 0) return;
      clearTimeout(timer);
      socket.off("data", onData);
      const rest = got.subarray(end + 4);
      if (rest.length) socket.unshift(rest);
      resolve({ socket, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(got.toString("latin1"))?.[1]) });
    };
    socket.on("data", onData);
    socket.once("secureConnect", () => socket.write(head));
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The request head of a framed-TCP upgrade to a Service port. */
export function framedHead(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: hub\r\nConnection: Upgrade\r\nUpgrade: ${eofFramedUpgrade}\r\n\r\n`;
}
