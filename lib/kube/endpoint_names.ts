/**
 * Names of the endpoints an agent publishes for its cluster; hub and agent both build them here.
 *
 * - `kubernetes`: the cluster's API server (lib/agent/kube_endpoint.ts)
 * - `svc/NS/NAME:PORT`: a Service port hub users may reach (the agent's allowlist decides)
 * - `lb/NS/NAME:PORT` and `lb/NS/NAME:PORT/udp`: a LoadBalancer Service port behind a public hub port
 * @module
 */

/** The API server endpoint. */
export const kubernetesEndpoint = "kubernetes";

/** A Service port for hub users; `port` is a number or a port name. */
export function serviceEndpointName(namespace: string, name: string, port: number | string): string {
  return `svc/${namespace}/${name}:${port}`;
}

/** A LoadBalancer Service port (`service` is `NS/NAME`). */
export function lbEndpointName(service: string, port: number, protocol: "TCP" | "UDP"): string {
  return `lb/${service}:${port}${protocol === "UDP" ? "/udp" : ""}`;
}
