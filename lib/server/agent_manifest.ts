/**
 * The Kubernetes manifest `cluster add` prints: the agent's namespace, ServiceAccount, least-privilege
 * RBAC (impersonation, and what the LoadBalancer controller reads and writes), a Secret with the join
 * token and hub CA, and the Deployment. The RBAC objects are also kept in deploy/agent/rbac.yaml, which
 * the test harness applies; a test keeps the two the same.
 * @module
 */

import YAML from "yaml";

/** The agent's namespace, ServiceAccount and RBAC, as plain objects. */
export function agentRbacObjects(): Record<string, unknown>[] {
  const ns = "tower-system";
  return [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } },
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "tower-agent", namespace: ns } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "tower-agent" },
      rules: [
        { apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] },
        { apiGroups: ["authentication.k8s.io"], resources: ["userextras", "uids"], verbs: ["impersonate"] },
        { apiGroups: [""], resources: ["services"], verbs: ["get", "list", "watch"] },
        { apiGroups: [""], resources: ["services/status"], verbs: ["update", "patch"] },
        { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["get", "list", "watch"] },
        { apiGroups: ["", "events.k8s.io"], resources: ["events"], verbs: ["create", "patch"] },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: "tower-agent" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "tower-agent" },
      subjects: [{ kind: "ServiceAccount", name: "tower-agent", namespace: ns }],
    },
  ];
}

/** What the agent of one cluster needs to know. */
export interface AgentManifestInput {
  cluster: string;
  hubUrl: string;
  fingerprint: string;
  token: string;
  caPem: string;
  image?: string;
}

/** The complete multi-document YAML for one cluster's agent. */
export function agentManifest(input: AgentManifestInput): string {
  const ns = "tower-system";
  const secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "tower-agent", namespace: ns },
    type: "Opaque",
    stringData: { token: input.token, "hub-ca.crt": input.caPem },
  };
  const deployment = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "tower-agent", namespace: ns, labels: { app: "tower-agent" } },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "tower-agent" } },
      template: {
        metadata: { labels: { app: "tower-agent" } },
        spec: {
          serviceAccountName: "tower-agent",
          containers: [{
            name: "agent",
            image: input.image ?? "ghcr.io/tower-dev/tower-agent:latest",
            args: [
              `--hub=${input.hubUrl}`,
              `--cluster=${input.cluster}`,
              `--hub-fingerprint=${input.fingerprint}`,
              "--token-file=/etc/tower/token",
              "--ca-file=/etc/tower/hub-ca.crt",
            ],
            volumeMounts: [{ name: "tower", mountPath: "/etc/tower", readOnly: true }],
            resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "256Mi" } },
            securityContext: {
              allowPrivilegeEscalation: false,
              readOnlyRootFilesystem: true,
              runAsNonRoot: true,
            },
          }],
          volumes: [{ name: "tower", secret: { secretName: "tower-agent", defaultMode: 0o400 } }],
        },
      },
    },
  };
  return [...agentRbacObjects(), secret, deployment].map((o) => YAML.stringify(o)).join("---\n");
}
