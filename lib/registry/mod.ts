/** Clusters, users, access rules, tokens and settings: the registry interface and its YAML backend. @module */
export { extraProblem, FileRegistry, isUserName, validateRegistry } from "./file_registry.ts";
export {
  applyLabelEdits,
  type LabelEdit,
  labelKeyProblem,
  labelsProblem,
  labelValueProblem,
  maxLabels,
  parseLabelEdit,
} from "./labels.ts";
export {
  maxRequirements,
  maxSelectorLength,
  maxSetValues,
  parseSelector,
  type Requirement,
  selectorMatches,
} from "./label_selector.ts";
export { isCertEpoch, newCertEpoch, serialInEpoch } from "./cert_epoch.ts";
export { decoyHash, hashToken, isTokenHash, newToken, tokenMatches } from "./join_token.ts";
export {
  type AccessRule,
  type AuthMode,
  type ClusterRecord,
  emptyRegistry,
  type HubSettings,
  type LoadBalancerPort,
  type Registry,
  type RegistryData,
  type UserRecord,
} from "./registry.ts";
export {
  FileReplicaLeases,
  type FileReplicaLeasesOptions,
  isPeerAddress,
  type ReplicaLease,
  type ReplicaLeases,
} from "./replica_leases.ts";
