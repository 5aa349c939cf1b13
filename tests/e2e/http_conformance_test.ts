/**
 * The HTTP conformance matrix (tests/helpers/conformance.ts) from a raw socket through hub + agent, to the
 * real API server and to a real Service inside the cluster.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawnListening, startTowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import { RawConnection, type RawTarget } from "../helpers/raw_http.ts";
import { type ConformanceTarget, getHead, runConformance } from "../helpers/conformance.ts";

const clusterName = "conform";
const servicePort = 8081;

let names = 0;

/** A ConfigMap of about `size` bytes of JSON, with `labels`. */
function configMap(size: number, labels: Record<string, string> = {}): string {
  const doc = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: `cm-${++names}`, labels },
    data: { v: "" },
  };
  doc.data.v = "x".repeat(Math.max(0, size - JSON.stringify(doc).length));
  return JSON.stringify(doc);
}

function apiTarget(headers: [string, string][], raw: RawTarget): ConformanceTarget {
  const base = `/clusters/${clusterName}`;
  const configmaps = `${base}/api/v1/namespaces/default/configmaps`;
  return {
    name: "API server",
    headers,
    probe: `${base}/version`,
    sink: configmaps,
    body: (size) => configMap(size),
    accepted: (r) => assert.equal(r.status, 201, r.body.toString().slice(0, 300)),
    early: { path: `${base}/api/v1/namespaces/default/nosuchthings`, status: 404 },
    refused: { headers: [["Host", "hub"], ["Authorization", "Bearer wrong"]], status: 401 },
    // The API server takes at most 3 MiB in one request, and must say so rather than hang.
    tooLarge: 413,
    bodiless: [{
      name: "304 to a conditional GET",
      status: 304,
      request: async (c) => {
        const path = `${base}/openapi/v3/api/v1`;
        await c.write(getHead(headers, path));
        const first = await c.response("GET", 10_000);
        const etag = first.headers.find(([n]) => n.toLowerCase() === "etag")?.[1];
        assert.ok(etag, "the OpenAPI document has an ETag");
        await c.write(getHead(headers, path, [["If-None-Match", etag]]));
        return await c.response("GET");
      },
    }],
    // A watch whose reader stalls while about `bytes` of events queue up behind it.
    slowStream: async (c, bytes) => {
      await c.write(getHead(headers, `${configmaps}?watch=true&labelSelector=slow%3Dyes`));
      const writer = await RawConnection.open(raw);
      const each = 16 * 1024;
      const count = Math.ceil(bytes / each);
      try {
        for (let i = 0; i < count; i++) {
          const body = configMap(each, { slow: "yes" });
          await writer.write(
            `POST ${configmaps} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join("")}` +
              `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
          );
          assert.equal((await writer.response("POST", 10_000)).status, 201);
        }
      } finally {
        writer.close();
      }
      return count * each;
    },
  };
}

function serviceTarget(headers: [string, string][]): ConformanceTarget {
  const base = `/clusters/${clusterName}/services/web/conf:80`;
  return {
    name: "Service",
    headers,
    probe: `${base}/probe`,
    sink: `${base}/echo`,
    body: (size) => "y".repeat(size),
    accepted: (r, bytes) => {
      assert.equal(r.status, 200, r.body.toString().slice(0, 300));
      assert.equal(JSON.parse(r.body.toString()).bytes, bytes);
    },
    early: { path: `${base}/early`, status: 401 },
    refused: { headers: [["Host", "hub"], ["Authorization", "Bearer wrong"]], status: 401 },
    bodiless: [[204, "/nocontent"], [304, "/notmodified"]].map(([status, path]) => ({
      name: `${status} answer`,
      status: status as number,
      request: async (c) => {
        await c.write(getHead(headers, `${base}${path}`));
        return await c.response("GET");
      },
    })),
    trailers: `${base}/trailers`,
    upgrade: `${base}/upgrade`,
    slowStream: async (c, bytes) => {
      await c.write(getHead(headers, `${base}/stream?bytes=${bytes}`));
      return bytes;
    },
  };
}

Deno.test("HTTP conformance through hub and agent, to the API server and to a Service", async (t) => {
  const env = await startTowerEnv({ clusters: [clusterName], agentArgs: ["--services-namespaces", "web"] });
  try {
    const cluster = env.clusters.get(clusterName)!;
    const helper = new URL("../helpers/conformance.ts", import.meta.url).href;
    const backend = await spawnListening(
      cluster,
      `import { serveConformanceBackend } from "${helper}";
       await serveConformanceBackend(${servicePort}, "0.0.0.0");
       console.log("listening");`,
      "conformance backend",
    );
    try {
      assert.equal((await cluster.kubectl(["create", "namespace", "web"])).code, 0);
      const applied = await cluster.kubectl(["apply", "-f", "-"], {
        stdin: JSON.stringify({
          apiVersion: "v1",
          kind: "List",
          items: [
            {
              apiVersion: "v1",
              kind: "Service",
              metadata: { name: "conf", namespace: "web" },
              spec: { ports: [{ name: "main", port: 80, targetPort: servicePort, protocol: "TCP" }] },
            },
            {
              apiVersion: "discovery.k8s.io/v1",
              kind: "EndpointSlice",
              metadata: {
                name: "conf-1",
                namespace: "web",
                labels: { "kubernetes.io/service-name": "conf" },
              },
              addressType: "IPv4",
              ports: [{ name: "main", port: servicePort, protocol: "TCP" }],
              endpoints: [{ addresses: [cluster.nsAddress], conditions: { ready: true } }],
            },
          ],
        }),
      });
      assert.equal(applied.code, 0, applied.stderr);
      const token = await env.addTokenUser("conformer", ["system:masters"], ["*"]);
      const headers: [string, string][] = [["Host", "hub"], ["Authorization", `Bearer ${token}`]];
      const raw: RawTarget = {
        host: "127.0.0.1",
        port: env.hub.port,
        ca: await Deno.readTextFile(env.added.get(clusterName)!.caFile),
      };
      for (const target of [apiTarget(headers, raw), serviceTarget(headers)]) {
        // The hub applies the new user, and the agent publishes the Service, within moments.
        await eventually(20_000, async () => {
          const c = await RawConnection.open(raw);
          try {
            await c.write(getHead(headers, target.probe));
            assert.equal((await c.response("GET", 2000)).status, 200);
          } finally {
            c.close();
          }
        });
        await runConformance(t, raw, target);
      }
    } finally {
      await backend.stop();
    }
  } finally {
    await env.stop();
  }
});
