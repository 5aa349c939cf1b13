/**
 * The Kubernetes manifest `cluster add` prints. It is made of the very files in deploy/agent/ (which
 * the test harness applies to real clusters): rbac.yaml as is, deployment.yaml with its ConfigMap
 * filled in, plus a Secret with the join token and the hub CA (left out when the token went to a file).
 * @module
 */

import YAML from "yaml";
import rbacYaml from "../../deploy/agent/rbac.yaml" with { type: "text" };
import deploymentYaml from "../../deploy/agent/deployment.yaml" with { type: "text" };

/** What the agent of one cluster needs to know. */
export interface AgentManifestInput {
  cluster: string;
  hubUrl: string;
  fingerprint: string;
  /** The join token; without it the Secret is left out (made from a token file instead). */
  token?: string | undefined;
  caPem: string;
}

/** The complete multi-document YAML for one cluster's agent. */
export function agentManifest(input: AgentManifestInput): string {
  const docs = YAML.parseAllDocuments(deploymentYaml).map((d) => d.toJSON() as Record<string, unknown>);
  for (const doc of docs) {
    if (doc.kind === "ConfigMap") {
      doc.data = {
        TOWER_HUB_URL: input.hubUrl,
        TOWER_CLUSTER: input.cluster,
        TOWER_HUB_FINGERPRINT: input.fingerprint,
      };
    }
  }
  const secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: "tower-agent",
      namespace: "tower-system",
      labels: { "app.kubernetes.io/name": "tower-agent" },
    },
    type: "Opaque",
    stringData: { token: input.token, "hub-ca.crt": input.caPem },
  };
  const objects = input.token === undefined ? docs : [secret, ...docs];
  return [rbacYaml.trimEnd(), ...objects.map((o) => YAML.stringify(o).trimEnd())].join("\n---\n") +
    "\n";
}
