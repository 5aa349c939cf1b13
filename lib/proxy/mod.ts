/** The upgrade-aware HTTP/1.1 reverse proxy shared by hub and agent. @module */
export {
  BodyRelay,
  endToEndHeaders,
  isUpgrade,
  type ProxyOutcome,
  proxyRequest,
  type ProxyTarget,
  proxyUpgrade,
  relayHead,
  type Upstream,
  writeRawResponse,
} from "./upgrade_proxy.ts";
export {
  exchange,
  type ExchangeResult,
  requestHead,
  ResponseFramingError,
  type ResponseHead,
  ResponseParser,
} from "./channel_http.ts";
