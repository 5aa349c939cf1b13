/** The upgrade-aware HTTP/1.1 reverse proxy shared by hub and agent. @module */
export {
  endToEndHeaders,
  isUpgrade,
  type ProxyOutcome,
  proxyRequest,
  type ProxyTarget,
  proxyUpgrade,
  type Upstream,
  writeRawResponse,
} from "./upgrade_proxy.ts";
