/** The agent: configuration, endpoints it serves, and its connect/reconnect loop. @module */
export { type AgentConfig, agentUsage, loadAgentConfig, type PublishedTcp } from "./agent_config.ts";
export { type Agent, agentVersion, startAgent } from "./agent.ts";
export { dialPlain, tcpEndpoint } from "./endpoints.ts";
export { type AuthMode, kubeEndpoint, type KubeEndpointConfig } from "./kube_endpoint.ts";
export { ServiceCatalog } from "./service_catalog.ts";
export { startServiceController } from "./service_controller.ts";
