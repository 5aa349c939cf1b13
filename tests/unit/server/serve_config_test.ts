/** The `serve` flags (lib/server/serve_config.ts): what each yields, and each refusal's message. */

import assert from "node:assert/strict";
import { loadServeConfig } from "../../../lib/server/serve_config.ts";
import { expectConfigRejection } from "../../helpers/config_error.ts";

const noEnv = () => undefined;

Deno.test("serve defaults: self-signed TLS on 0.0.0.0:8443, file registry in ./.tower, no LB ports", async () => {
  const c = await loadServeConfig(["--replica-id", "r1"], noEnv);
  assert.deepEqual({ host: c.hub.host, port: c.hub.port }, { host: "0.0.0.0", port: 8443 });
  assert.deepEqual(c.hub.tls, { mode: "self-signed", names: [] });
  assert.equal(c.hub.replicaId, "r1");
  assert.equal(c.hub.keepaliveMs, 10_000);
  assert.equal(c.hub.handshakeTimeoutMs, 20_000);
  assert.equal(c.hub.auditLog, "-");
  assert.equal(c.hub.lb, undefined);
  assert.equal(c.hub.peer, undefined);
  assert.equal(c.hub.requestMetrics, true);
  assert.deepEqual(c.hub.oidc, []);
  assert.equal(c.logLevel, "info");
  assert.equal(c.drainTimeoutMs, 30_000);
  assert.equal(c.storage.registry, "file");
  assert.equal(c.storage.dataDir, "./.tower");
});

Deno.test("serve flags and environment, as given", async () => {
  const env = (name: string) =>
    ({ TOWER_DATA_DIR: "/var/lib/tower", KUBERNETES_SERVICE_HOST: "10.0.0.1" })[name];
  const c = await loadServeConfig([
    "--listen",
    "127.0.0.1:9443",
    "--name",
    "hub.example",
    "--name",
    "10.1.1.1",
    "--forward",
    "7000=alpha/db",
    "--lb-ports",
    "30000-30100",
    "--lb-address",
    "lb.example",
    "--lb-udp-flows-per-source",
    "8",
    "--peer-listen",
    "0.0.0.0:9444",
    "--peer-advertise",
    "hub-0.example:9444",
    "--replica-id",
    "hub-0",
    "--log-level",
    "debug",
    "--drain-timeout",
    "5s",
    "--no-request-metrics",
    "--metrics-listen",
    "127.0.0.1:9100",
  ], env);
  assert.deepEqual({ host: c.hub.host, port: c.hub.port }, { host: "127.0.0.1", port: 9443 });
  assert.deepEqual(c.hub.tls, { mode: "self-signed", names: ["hub.example", "10.1.1.1"] });
  assert.equal(c.hub.forwards.length, 1);
  assert.equal(c.hub.lb?.publicAddress, "lb.example");
  assert.deepEqual(c.hub.lb?.portRange, [30000, 30100]);
  assert.equal(c.hub.lb?.udpFlowCaps.perSource, 8);
  assert.deepEqual(c.hub.peer, { host: "0.0.0.0", port: 9444, advertise: "hub-0.example:9444" });
  assert.equal(c.hub.requestMetrics, false);
  assert.deepEqual(c.hub.metricsListen, { host: "127.0.0.1", port: 9100 });
  assert.equal(c.logLevel, "debug");
  assert.equal(c.drainTimeoutMs, 5000);
  assert.equal(c.storage.dataDir, "/var/lib/tower");
  assert.equal(c.storage.host?.serviceHost, "10.0.0.1");
  const files = await loadServeConfig(
    ["--tls-cert", "c.pem", "--tls-key", "k.pem"],
    noEnv,
  );
  assert.deepEqual(files.hub.tls, { mode: "files", certFile: "c.pem", keyFile: "k.pem" });
  assert.deepEqual((await loadServeConfig(["--plain-http"], noEnv)).hub.tls, { mode: "plain" });
});

Deno.test("serve refuses flags it cannot act on, naming the flag", async () => {
  const table: [string[], string][] = [
    [["--log-level", "loud"], "--log-level 'loud' is unknown"],
    [["--listen", "nowhere"], "--listen 'nowhere' is not HOST:PORT"],
    [["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"],
    [["--plain-http", "--tls-cert", "c", "--tls-key", "k"], "--plain-http and --tls-cert exclude each other"],
    [["--replica-id", "Hub_0"], "--replica-id 'Hub_0' is not a DNS label"],
    [["--peer-advertise", "h:1"], "--peer-advertise 'h:1' must be HOST:PORT, with --peer-listen"],
    [["--lb-address", "x"], "--lb-address needs --lb-ports"],
    [["--lb-ports", "9-3"], "--lb-ports '9-3' must be LO-HI"],
    [
      ["--lb-ports", "1-2", "--lb-udp-flows-per-port", "0"],
      "--lb-udp-flows-per-port '0' must be a whole number",
    ],
    [["--keepalive", "soon"], "--keepalive"],
    [["--registry", "etcd"], "--registry 'etcd' must be file or kubernetes"],
    [["--oidc-ca-file", "/nonexistent/ca.pem"], "--oidc-ca-file /nonexistent/ca.pem"],
    [["--bogus"], "bogus"],
    [["extra"], "unexpected argument 'extra'"],
  ];
  for (const [args, message] of table) {
    await expectConfigRejection(loadServeConfig(args, noEnv), message);
  }
});
