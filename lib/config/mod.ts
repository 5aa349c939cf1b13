/** Typed configuration helpers shared by the hub and the agent. @module */
export { ConfigError, parseDuration } from "./duration.ts";
export { checkClusterName, isClusterName, isEndpointName, isReplicaId, newReplicaId } from "./names.ts";
export {
  exitWithConfigError,
  type FlagOptions,
  type FlagValues,
  parseFlags,
  parseHostPort,
  readFlagFile,
} from "./cli.ts";
