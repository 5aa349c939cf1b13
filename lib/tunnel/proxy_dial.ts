/**
 * Dialing a TCP connection directly or through an HTTP CONNECT proxy chosen from the environment's
 * `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (values passed in by the caller; this module reads no env).
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";
import { ConfigError } from "../config/mod.ts";

/** Proxy settings as found in the environment. */
export interface ProxyEnv {
  httpsProxy?: string | undefined;
  httpProxy?: string | undefined;
  noProxy?: string | undefined;
}

/** The proxy URL to use for `target` (a ws/wss URL), or undefined for a direct connection. */
export function proxyFor(target: URL, env: ProxyEnv): URL | undefined {
  const secure = target.protocol === "wss:" || target.protocol === "https:";
  const raw = (secure ? env.httpsProxy || env.httpProxy : env.httpProxy) || undefined;
  if (!raw) return undefined;
  if (bypassesProxy(target, env.noProxy ?? "")) return undefined;
  let proxy: URL;
  try {
    proxy = new URL(raw.includes("://") ? raw : `http://${raw}`);
  } catch {
    throw new ConfigError(`proxy URL '${redactUrl(raw)}' is not a URL`);
  }
  if (proxy.protocol !== "http:") {
    throw new ConfigError(`proxy '${redactUrl(raw)}': only http:// proxies (HTTP CONNECT) are supported`);
  }
  return proxy;
}

/** True when `target` matches an entry of a NO_PROXY list (`*`, host, `.suffix`, `host:port`, IP). */
export function bypassesProxy(target: URL, noProxy: string): boolean {
  const host = target.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = target.port || (target.protocol === "wss:" || target.protocol === "https:" ? "443" : "80");
  for (let entry of noProxy.split(/[,\s]+/)) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return true;
    let entryPort: string | undefined;
    const m = /^(.*):(\d+)$/.exec(entry);
    if (m && !entry.includes("::")) [entry, entryPort] = [m[1]!, m[2]];
    if (entryPort && entryPort !== port) continue;
    const bare = entry.replace(/^\*?\./, "");
    if (host === bare || host.endsWith("." + bare)) return true;
  }
  return false;
}

/** A URL with any password replaced, safe for logs and errors. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw.includes("://") ? raw : `http://${raw}`);
    // Userinfo may be a credential, whichever half it is in.
    if (u.username || u.password) {
      u.username = "***";
      u.password = "";
    }
    return u.toString();
  } catch {
    return "<unparseable>";
  }
}

/** Opens a TCP connection to host:port, through `proxy` with HTTP CONNECT when given. */
export function dialTcp(host: string, port: number, proxy?: URL, timeoutMs = 15_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const viaProxy = proxy !== undefined;
    const socket = net.connect({
      host: viaProxy ? proxy.hostname.replace(/^\[|\]$/g, "") : host,
      port: viaProxy ? Number(proxy.port || 80) : port,
    });
    socket.setNoDelay(true);
    const timer = setTimeout(() => fail(new Error(`connect to ${host}:${port} timed out`)), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    socket.once("error", fail);
    socket.once("connect", () => {
      if (!viaProxy) {
        clearTimeout(timer);
        socket.off("error", fail);
        resolve(socket);
        return;
      }
      const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
      let request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
      if (proxy.username || proxy.password) {
        const creds = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
        request += `Proxy-Authorization: Basic ${Buffer.from(creds).toString("base64")}\r\n`;
      }
      socket.write(request + "\r\n");
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) {
          if (head.length > 16_384) fail(new Error("proxy sent an oversized response"));
          return;
        }
        socket.off("data", onData);
        const status = /^HTTP\/1\.[01] (\d{3})([^\r\n]*)/.exec(head.subarray(0, end).toString("latin1"));
        if (!status || status[1] !== "200") {
          const what = status ? `${status[1]}${status[2]}` : "a malformed response";
          fail(new Error(`proxy ${redactUrl(proxy.toString())} refused CONNECT to ${authority}: ${what}`));
          return;
        }
        clearTimeout(timer);
        socket.off("error", fail);
        const rest = head.subarray(end + 4);
        if (rest.length) socket.unshift(rest);
        resolve(socket);
      };
      socket.on("data", onData);
    });
  });
}
