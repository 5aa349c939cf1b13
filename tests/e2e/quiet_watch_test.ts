/**
 * An agent whose cluster has been quiet for longer than client-node's 30 s watch renewal still sees
 * Services created afterwards: a LoadBalancer Service created after 45 s without Service or
 * EndpointSlice changes gets its public port as fast as one created right after the agent started.
 */

import assert from "node:assert/strict";
import { startTowerEnv, type TowerEnv } from "./tower_env.ts";
import { eventually } from "../helpers/wait.ts";
import type { TestCluster } from "../cluster/cluster.ts";

const clusterName = "qw";
const ns = "quiet";
const portRange = [31881, 31882] as const;
const hubArgs = ["--lb-ports", `${portRange[0]}-${portRange[1]}`, "--lb-address", "127.0.0.1"];

/** Creates a selector-less LoadBalancer Service of Tower's class as the cluster admin. */
async function createLb(cluster: TestCluster, name: string): Promise<void> {
  const svc = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: ns },
    spec: {
      type: "LoadBalancer",
      loadBalancerClass: "tower.dev/lb",
      ports: [{ protocol: "TCP", port: 80, targetPort: 9000 }],
    },
  };
  const r = await cluster.kubectl(["create", "-f", "-"], { stdin: JSON.stringify(svc) });
  assert.equal(r.code, 0, r.stderr);
}

/** Waits up to `ms` for the Service's status to name a public TCP port in the range; returns it. */
async function publicPort(cluster: TestCluster, name: string, ms: number): Promise<number> {
  return await eventually(ms, async () => {
    const r = await cluster.kubectl(["get", "svc", "-n", ns, name, "-o", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout).status;
    const port = status?.loadBalancer?.ingress?.[0]?.ports?.find((
      p: { protocol: string; error?: string },
    ) => p.protocol === "TCP" && !p.error)?.port;
    assert.ok(typeof port === "number", `${name}: ${JSON.stringify(status)}`);
    assert.ok(port >= portRange[0] && port <= portRange[1], `port ${port} outside the range`);
    return port;
  });
}

Deno.test("quiet watch: an agent sees a Service created after 45 s without changes", async () => {
  const env: TowerEnv = await startTowerEnv({ clusters: [clusterName], hubArgs });
  const cluster = env.clusters.get(clusterName)!;
  try {
    assert.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
    await createLb(cluster, "early");
    const early = await publicPort(cluster, "early", 30_000);
    // The bug needs real quiet time: no Service or EndpointSlice changes for longer than the 30 s after
    // which client-node's own watch stopped delivering. Nothing here can signal "quiet long enough".
    await new Promise((r) => setTimeout(r, 45_000));
    await createLb(cluster, "late");
    const late = await publicPort(cluster, "late", 10_000);
    assert.notEqual(late, early);
  } finally {
    await env.stop();
  }
});
