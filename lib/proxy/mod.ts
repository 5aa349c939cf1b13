/** The upgrade-aware HTTP/1.1 reverse proxy and the HTTP clients shared by hub and agent. @module */
export {
  type Dial,
  type Dialed,
  DuplexClients,
  type DuplexClientsOptions,
  type Lease,
} from "./duplex_clients.ts";
export { endToEndHeaders, headerRecord, isUpgrade, rawResponseHead } from "./hop_headers.ts";
export { type Responder, ReverseProxy } from "./reverse_proxy.ts";
export { writeRawResponse } from "./raw_response.ts";
export {
  BodyRelay,
  type ProxyOutcome,
  proxyRequest,
  type ProxyTarget,
  proxyUpgrade,
  relayHead,
  type Upstream,
} from "./upgrade_proxy.ts";
export {
  exchange,
  type ExchangeResult,
  requestHead,
  ResponseFramingError,
  type ResponseHead,
  ResponseParser,
} from "./channel_http.ts";
