/** Typed configuration helpers shared by the hub and the agent. @module */
export { ConfigError, parseDuration } from "./duration.ts";
export { checkClusterName, isClusterName, isEndpointName, isReplicaId, newReplicaId } from "./names.ts";
export { exitWithConfigError, parseFlags, parseHostPort } from "./cli.ts";
