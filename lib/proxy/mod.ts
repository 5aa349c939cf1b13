/** The upgrade-aware HTTP/1.1 reverse proxy and the HTTP client over any duplex, shared by hub and agent. @module */
export {
  type Dial,
  type Dialed,
  DuplexClients,
  type DuplexClientsOptions,
  type Lease,
} from "./duplex_clients.ts";
export { type DuplexConnections, duplexConnections } from "./duplex_server.ts";
export { endToEndHeaders, headerRecord, isUpgrade, rawResponseHead } from "./hop_headers.ts";
export { type ProxyOutcome, type ProxyTarget, type Responder, ReverseProxy } from "./reverse_proxy.ts";
export { writeRawResponse } from "./raw_response.ts";
