/**
 * Informers (list, then watch from the list's resourceVersion) that keep watching in Deno.
 *
 * client-node's own informer relies on a client-side inactivity timeout (30 s) to renew a quiet watch;
 * in Deno that abort never reaches the informer, so after 30 s without events a watch silently stops
 * delivering (measured here against the harness apiserver). These informers ask the API server to end
 * each watch itself (`timeoutSeconds`, 20-30 s, with bookmarks), renew it at once, and restart one whose
 * connection went quiet for far longer than that (a dead TCP connection) with a fresh list.
 * @module
 */

import * as k8s from "@kubernetes/client-node";

/** An informer with its cache. */
export type Informer<T extends k8s.KubernetesObject> = k8s.Informer<T> & k8s.ObjectCache<T>;

/** A watch that the server ends after 20-30 s, recording when it last heard anything. */
class ServerTimedWatch extends k8s.Watch {
  lastHeard = Date.now();

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    this.lastHeard = Date.now();
    const params = {
      ...queryParams,
      allowWatchBookmarks: true,
      timeoutSeconds: 20 + Math.floor(Math.random() * 10),
    };
    return super.watch(path, params, (phase, obj, raw) => {
      this.lastHeard = Date.now();
      callback(phase, obj, raw);
    }, done);
  }
}

/** A watch that heard nothing for this long is dead (the server ends each one within 30 s). */
const quietLimitMs = 75_000;

/**
 * An informer of `path` (objects listed by `list`, optionally only those with `labelSelector`) that
 * keeps watching; `stop()` ends it and its liveness check.
 */
export function makeInformer<T extends k8s.KubernetesObject>(
  kc: k8s.KubeConfig,
  path: string,
  list: () => Promise<k8s.KubernetesListObject<T>>,
  labelSelector?: string,
): Informer<T> {
  const watch = new ServerTimedWatch(kc);
  // A watch the server ended is renewed at once (client-node would back off up to 30 s between quiet ones).
  const inf = new k8s.ListWatch<T>(path, watch, list, false, labelSelector, undefined, {
    delayFn: () => Promise.resolve(),
  });
  let running = false;
  let check: ReturnType<typeof setInterval> | undefined;
  const start = inf.start.bind(inf);
  const stop = inf.stop.bind(inf);
  inf.start = async () => {
    running = true;
    check ??= setInterval(() => {
      if (running && Date.now() - watch.lastHeard > quietLimitMs) {
        watch.lastHeard = Date.now();
        void stop().then(() => running ? start() : undefined).catch(() => {});
      }
    }, quietLimitMs / 3);
    await start();
  };
  inf.stop = async () => {
    running = false;
    if (check) clearInterval(check);
    check = undefined;
    await stop();
  };
  return inf;
}
