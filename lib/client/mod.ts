/** What runs on a user's machine: the `login` exec credential plugin, its token cache and its output. @module */
export { execCredential } from "./exec_credential.ts";
export { idToken, type LoginOptions, renewBeforeMs } from "./oidc_login.ts";
export {
  type CachedTokens,
  defaultCacheDir,
  dropCache,
  maxCacheBytes,
  readCache,
  writeCache,
} from "./token_cache.ts";
