/** The hub: front door, agent sessions, admission, forwarding, admin commands. @module */
export {
  addCluster,
  type ClusterOptions,
  type ClusterRow,
  type IssuedToken,
  labelCluster,
  listClusters,
  removeCluster,
  rotateToken,
} from "./admin.ts";
export { agentManifest } from "./agent_manifest.ts";
export { type AgentSummary, ClusterSessions, NoAgentError } from "./cluster_sessions.ts";
export { DataDir, dataPaths, newHostKey } from "./data_dir.ts";
export { type HubStorage, openStorage, parseRegistryKind, type RegistryKind } from "./hub_storage.ts";
export { type Hub, type HubConfig, startHub, towerVersion } from "./hub.ts";
export { type ForwardRule, parseForward } from "./tcp_forward.ts";
export {
  addUser,
  allowAccess,
  clientCertLifetime,
  defaultClientCertTtl,
  hubServerUrl,
  oidcKubeconfig,
  type OidcKubeconfigOptions,
  removeUser,
  revokeUserCerts,
  setCertTtls,
  userKubeconfig,
} from "./user_admin.ts";
export {
  type AuthResult,
  globMatch,
  type Identity,
  mayReach,
  reachableClusters,
  ruleSelects,
  UserAuthenticator,
} from "./user_auth.ts";
export { kubeProxy } from "./kube_proxy.ts";
export { identityHeaders, serviceHeaders } from "./identity_headers.ts";
export { kubeRoute, Refusal } from "./kube_route.ts";
export { type LbConfig, LbManager } from "./lb_manager.ts";
export { oidcConfigs, type OidcIssuerConfig, OidcVerifier } from "./oidc_verifier.ts";
export { defaultUdpFlowCaps, type UdpFlowCaps } from "./udp_flow_caps.ts";
