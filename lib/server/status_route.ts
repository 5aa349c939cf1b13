/**
 * The status page on the front door: `/` for admins (others get a sign-in hint or 403), its two assets,
 * and `/api/tower/v1/events`, a Server-Sent Events stream of the page's live sections: every 2 s, and
 * at once when an agent comes or goes. One view is rendered per push, whatever the number of viewers.
 * @module
 */

import type http from "node:http";
import { Buffer } from "node:buffer";
import type { Logger } from "../log/log.ts";
import { type AdminCheck } from "./admin_api.ts";
import {
  assetPaths,
  refusalPage,
  renderSections,
  renderStatusPage,
  statusCss,
  statusScript,
  type StatusView,
} from "./status_page.ts";

/** Path of the live stream. */
export const eventsPath = "/api/tower/v1/events";
/** Viewers served at once; more get 503. */
export const maxViewers = 32;
/** A viewer whose unsent backlog passes this is dropped (it stopped reading). */
const maxBacklogBytes = 1 << 20;
/** Interval of routine pushes. */
const pushEveryMs = 2000;

/** What the status route needs. */
export interface StatusRouteDeps {
  /** Decides whether the caller is an admin. */
  check(req: http.IncomingMessage): Promise<AdminCheck>;
  /** Takes the current view. */
  view(): Promise<StatusView>;
  log: Logger;
}

function send(res: http.ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
  });
  res.end(body);
}

/** The status route, and a way to push an update now. */
export function statusRoute(deps: StatusRouteDeps): {
  route(req: http.IncomingMessage, res: http.ServerResponse): boolean;
  /** Pushes soon (coalescing bursts), e.g. when an agent comes or goes. */
  changed(): void;
  close(): void;
} {
  const viewers = new Set<http.ServerResponse>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let soon: ReturnType<typeof setTimeout> | undefined;
  let pushing = false;

  const push = async () => {
    if (pushing || viewers.size === 0) return;
    pushing = true;
    try {
      const v = await deps.view();
      const frame = `event: status\ndata: ${
        JSON.stringify({ updated: v.at.toISOString().slice(11, 19), sections: renderSections(v) })
      }\n\n`;
      for (const res of viewers) {
        if (res.writableLength > maxBacklogBytes) res.destroy();
        else res.write(frame);
      }
    } catch (e) {
      deps.log.warn("status push failed", { error: e });
    } finally {
      pushing = false;
    }
  };

  const stream = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (viewers.size >= maxViewers) {
      return send(res, 503, "text/plain; charset=utf-8", `at most ${maxViewers} live viewers\n`);
    }
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    });
    res.write("retry: 2000\n\n");
    viewers.add(res);
    timer ??= setInterval(() => void push(), pushEveryMs);
    req.socket.setTimeout(0);
    res.once("close", () => {
      viewers.delete(res);
      if (viewers.size === 0 && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    });
    void push();
  };

  return {
    route: (req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === assetPaths.script) {
        send(res, 200, "text/javascript; charset=utf-8", statusScript);
        return true;
      }
      if (path === assetPaths.style) {
        send(res, 200, "text/css; charset=utf-8", statusCss);
        return true;
      }
      if (path !== "/" && path !== eventsPath) return false;
      req.resume();
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(res, 405, "text/plain; charset=utf-8", "GET only\n");
        return true;
      }
      deps.check(req).then(async (check) => {
        if (!check.ok) {
          if (path === eventsPath) {
            send(res, check.code, "application/json", JSON.stringify({ error: check.message }));
          } else send(res, check.code, "text/html; charset=utf-8", refusalPage(check.code, check.message));
          return;
        }
        if (path === eventsPath) return stream(req, res);
        send(res, 200, "text/html; charset=utf-8", renderStatusPage(await deps.view(), check.who.user));
      }).catch((e: Error) => {
        if (res.headersSent) res.destroy();
        else send(res, 500, "text/plain; charset=utf-8", `status not available: ${e.message}\n`);
      });
      return true;
    },
    changed: () => {
      if (soon || viewers.size === 0) return;
      soon = setTimeout(() => {
        soon = undefined;
        void push();
      }, 100);
    },
    close: () => {
      if (timer) clearInterval(timer);
      if (soon) clearTimeout(soon);
      for (const res of viewers) res.destroy();
      viewers.clear();
    },
  };
}
