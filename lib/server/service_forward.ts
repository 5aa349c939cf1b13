/**
 * `main_server.ts forward`: a user-side command that forwards a local TCP port to a Service port in a
 * cluster through the hub (like `kubectl port-forward`, but to a Service and with no kubelet in the path).
 * Each local connection becomes one framed-TCP upgrade (lib/tunnel/eof_framing.ts) on `/clusters/NAME/services/NS/SVC:PORT`,
 * authenticated with the credentials of the user's hub kubeconfig.
 * @module
 */

import https from "node:https";
import net from "node:net";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import YAML from "yaml";
import type { Logger } from "../log/log.ts";
import { ConfigError } from "../config/mod.ts";
import { eofFramed, eofFramedUpgrade, splice } from "../tunnel/mod.ts";

/** Where to forward to and with which credentials. */
export interface ServiceForwardTarget {
  /** `https://HOST:PORT` of the hub. */
  hub: URL;
  cluster: string;
  namespace: string;
  service: string;
  port: string;
  ca: string;
  cert?: string | undefined;
  key?: string | undefined;
  token?: string | undefined;
}

/** The parts of a kubeconfig this command reads. */
interface KubeconfigDoc {
  clusters?: { name: string; cluster?: Record<string, string> }[];
  users?: { name: string; user?: Record<string, string> }[];
  contexts?: { name: string; context?: { cluster?: string; user?: string } }[];
}

/** Parses `CLUSTER/NAMESPACE/SERVICE:PORT`. */
export function parseServiceRef(
  text: string,
): { cluster: string; namespace: string; service: string; port: string } {
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)\/([a-z0-9-]+):([a-z0-9-]+)$/.exec(text);
  if (!m) throw new ConfigError(`'${text}' is not CLUSTER/NAMESPACE/SERVICE:PORT`);
  return { cluster: m[1]!, namespace: m[2]!, service: m[3]!, port: m[4]! };
}

/** Reads hub address and credentials for `cluster` from a kubeconfig written by `main_server.ts kubeconfig`. */
export function credentialsFromKubeconfig(
  text: string,
  cluster: string,
): Pick<ServiceForwardTarget, "hub" | "ca" | "cert" | "key" | "token"> {
  const kc = (YAML.parse(text) ?? {}) as KubeconfigDoc;
  const ctx = kc.contexts?.find((c) => c.name === cluster) ??
    kc.contexts?.find((c) => c.context?.cluster === cluster);
  if (!ctx?.context) throw new ConfigError(`the kubeconfig has no context for cluster '${cluster}'`);
  const cl = kc.clusters?.find((c) => c.name === ctx.context!.cluster)?.cluster;
  const user = kc.users?.find((u) => u.name === ctx.context!.user)?.user ?? {};
  if (!cl?.server) throw new ConfigError(`the kubeconfig's cluster '${ctx.context.cluster}' has no server`);
  const server = new URL(cl.server);
  const b64 = (v: unknown) => (typeof v === "string" ? Buffer.from(v, "base64").toString() : undefined);
  const ca = b64(cl["certificate-authority-data"]);
  if (!ca) throw new ConfigError("the kubeconfig has no certificate-authority-data for the hub");
  return {
    hub: new URL(`${server.protocol}//${server.host}`),
    ca,
    cert: b64(user["client-certificate-data"]),
    key: b64(user["client-key-data"]),
    token: typeof user.token === "string" ? user.token : undefined,
  };
}

/** A running forward. */
export interface ServiceForward {
  port: number;
  close(): Promise<void>;
}

/** Listens on `host:port` and carries every connection to the target Service port. */
export function startServiceForward(
  target: ServiceForwardTarget,
  host: string,
  port: number,
  log: Logger,
): Promise<ServiceForward> {
  const path = `/clusters/${target.cluster}/services/${target.namespace}/${target.service}:${target.port}`;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (local) => {
    local.setNoDelay(true);
    local.on("error", () => {});
    sockets.add(local);
    local.once("close", () => sockets.delete(local));
    const req = https.request({
      host: target.hub.hostname.replace(/^\[|\]$/g, ""),
      port: Number(target.hub.port || 443),
      path,
      method: "GET",
      ca: target.ca,
      cert: target.cert,
      key: target.key,
      headers: {
        connection: "Upgrade",
        upgrade: eofFramedUpgrade,
        ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
      },
    });
    req.once("upgrade", (_res, remote: Duplex, head: Uint8Array) => {
      (remote as net.Socket).setNoDelay?.(true);
      if (head.length) remote.unshift(head);
      splice(local, eofFramed(remote));
    });
    req.once("response", (res) => {
      let body = "";
      res.on("data", (c: Uint8Array) => void (body += new TextDecoder().decode(c)));
      res.once("end", () => {
        let message = body;
        try {
          message = JSON.parse(body).message ?? body;
        } catch {
          // not a Status body: show it as it came
        }
        log.warn("forward refused by hub", { status: res.statusCode, message });
        local.destroy();
      });
    });
    req.once("error", (e) => {
      log.warn("forward failed", { error: e });
      local.destroy();
    });
    req.end();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
