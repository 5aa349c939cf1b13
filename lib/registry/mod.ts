/** Clusters, tokens and settings: the registry interface and its embedded YAML backend. @module */
export { FileRegistry, validateRegistry } from "./file_registry.ts";
export { decoyHash, hashToken, isTokenHash, newToken, tokenMatches } from "./join_token.ts";
export {
  type ClusterRecord,
  emptyRegistry,
  type HubSettings,
  type Registry,
  type RegistryData,
} from "./registry.ts";
