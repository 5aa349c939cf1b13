/**
 * Admin sockets: one Unix socket per replica in the hub's data dir (`admin/REPLICA.sock`, mode 0600) that
 * serves the admin API to whoever may open it, the way a container runtime's socket does. Who can read
 * the data dir holds the CA key already, so a socket gives them nothing new; it lets `cluster list` ask a
 * running hub without a certificate or token of its own, and replicas sharing a data dir ask each other.
 * @module
 */

import http from "node:http";
import { Buffer } from "node:buffer";
import { dirname, join } from "node:path";
import type { Logger } from "../log/log.ts";

/** Longest Unix socket path Linux accepts (sun_path holds 108 bytes with the NUL). */
export const maxSocketPath = 107;

/** A listening admin socket. */
export interface AdminSocket {
  close(): Promise<void>;
}

/** Serves `handler` on the Unix socket at `path`, replacing a stale socket file left by a crash. */
export async function startAdminSocket(
  path: string,
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  log: Logger,
): Promise<AdminSocket | undefined> {
  if (new TextEncoder().encode(path).length > maxSocketPath) {
    log.warn("admin socket not served: data dir path too long", { path, max: maxSocketPath });
    return undefined;
  }
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await Deno.remove(path).catch(() => {});
  const server = http.createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  await Deno.chmod(path, 0o600);
  return {
    close: async () => {
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
      await Deno.remove(path).catch(() => {});
    },
  };
}

/** Largest admin API answer read from the socket. */
const maxAnswerBytes = 16 << 20;

/** The admin socket of `replica` in the sockets dir (`dataPaths(dir).adminSockets`). */
export function adminSocketPath(socketsDir: string, replica: string): string {
  return join(socketsDir, `${replica}.sock`);
}

/** Most sockets `askAnyReplica` tries (a crashed replica leaves its socket file behind). */
export const maxSocketsTried = 32;

/**
 * GETs `apiPath` from whichever replica answers first on an admin socket in `socketsDir`; undefined when
 * none is running.
 */
export async function askAnyReplica(socketsDir: string, apiPath: string): Promise<unknown | undefined> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(socketsDir)) {
      if (e.name.endsWith(".sock")) names.push(e.name);
      if (names.length >= maxSocketsTried) break;
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  for (const name of names.sort()) {
    const answer = await askAdminSocket(join(socketsDir, name), apiPath);
    if (answer !== undefined) return answer;
  }
  return undefined;
}

/**
 * GETs `apiPath` from the hub listening on the admin socket at `socketPath`. Resolves undefined when no
 * hub listens there; rejects on any other failure, or after `timeoutMs`.
 */
export function askAdminSocket(
  socketPath: string,
  apiPath: string,
  timeoutMs = 10_000,
): Promise<unknown | undefined> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: apiPath, timeout: timeoutMs }, (res) => {
      const chunks: Uint8Array[] = [];
      let size = 0;
      res.on("data", (c: Uint8Array) => {
        size += c.length;
        if (size > maxAnswerBytes) {
          req.destroy(new Error(`admin API answer larger than ${maxAnswerBytes} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) {
          return reject(new Error(`admin API ${apiPath}: ${res.statusCode} ${text}`));
        }
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(e);
        }
      });
      res.on("error", reject);
    });
    req.on(
      "timeout",
      () => req.destroy(new Error(`no answer on admin socket ${socketPath} in ${timeoutMs} ms`)),
    );
    req.on("error", (e: Error & { code?: string }) => {
      // No socket file, or a file nobody listens on: the hub is not running.
      if (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e instanceof Deno.errors.NotFound) {
        resolve(undefined);
      } else reject(e);
    });
  });
}
