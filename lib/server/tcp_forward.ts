/**
 * Generic forwarding: a hub TCP listener whose connections become channels to an endpoint an agent of
 * a cluster publishes (`serve --forward LISTEN=CLUSTER/ENDPOINT`). Useful before any protocol-aware route.
 * @module
 */

import net from "node:net";
import type { Logger } from "../log/log.ts";
import { checkClusterName, ConfigError, isEndpointName } from "../config/mod.ts";
import { splice } from "../tunnel/mod.ts";
import type { ChannelRouter } from "./channel_router.ts";

/** One `--forward` rule. */
export interface ForwardRule {
  host: string;
  port: number;
  cluster: string;
  endpoint: string;
}

/** Parses `[HOST:]PORT=CLUSTER/ENDPOINT`. */
export function parseForward(text: string): ForwardRule {
  const m = /^(?:(.*):)?(\d{1,5})=([^/]+)\/(.+)$/.exec(text);
  if (!m) throw new ConfigError(`--forward '${text}': expected [HOST:]PORT=CLUSTER/ENDPOINT`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(`--forward '${text}': port ${port} is out of range`);
  const cluster = checkClusterName(m[3]!);
  const endpoint = m[4]!;
  if (!isEndpointName(endpoint)) {
    throw new ConfigError(`--forward '${text}': '${endpoint}' is not an endpoint name`);
  }
  return { host: (m[1] ?? "0.0.0.0").replace(/^\[|\]$/g, "") || "0.0.0.0", port, cluster, endpoint };
}

/** A running forward listener. */
export interface ForwardListener {
  rule: ForwardRule;
  port: number;
  close(): Promise<void>;
}

/** Listens for `rule` and carries each connection over a channel; a connection is closed when no agent can take it. */
export function startForward(
  rule: ForwardRule,
  channels: ChannelRouter,
  log: Logger,
): Promise<ForwardListener> {
  const flog = log.with({ forward: `${rule.cluster}/${rule.endpoint}` });
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    channels.openChannel(rule.cluster, rule.endpoint).then(({ channel, agent, via }) => {
      splice(
        socket,
        channel,
        (stats) =>
          flog.debug("forward closed", {
            ...(agent ? { agent: agent.id } : { via }),
            bytesIn: stats.aToB,
            bytesOut: stats.bToA,
          }),
      );
    }, (e) => {
      flog.warn("forward refused", { remote: socket.remoteAddress, error: e });
      socket.destroy();
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(rule.port, rule.host, () => {
      server.off("error", reject);
      const port = (server.address() as net.AddressInfo).port;
      flog.info("forward listening", { listen: `${rule.host}:${port}` });
      resolve({ rule, port, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}
