/**
 * Small helpers shared by the harness's own tests (reading a child's output, checking leftovers).
 *
 * @module
 */

import { netnsPids, rootLinks } from "./_netns.ts";
import { ip } from "./_netns.ts";

/** Collects a text stream in the background so tests can wait for a pattern in it. */
export class StreamText {
  text = "";
  /** Resolves when the stream has ended (after the process exited or the stream was cancelled). */
  readonly done: Promise<void>;
  #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.text += chunk;
        this.#waiters = this.#waiters.filter((w) => {
          const m = this.text.match(w.re);
          if (m) w.resolve(m);
          return !m;
        });
      }
    })();
  }

  /** Waits until the collected text matches `re`; rejects after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.re !== re);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} in:\n${this.text}`));
      }, timeoutMs);
      this.#waiters.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }
}

/** What of a cluster's namespace, veth, processes and dir still exists. */
export interface Leftovers {
  netns: boolean;
  veth: boolean;
  livePids: number[];
  dir: boolean;
}

/** Checks whether anything of a (stopped) cluster is still there. */
export async function leftovers(
  c: { netns: string; vethName: string; dir: string },
  pids: number[],
): Promise<Leftovers> {
  const nsList = await ip(["netns", "list"]);
  let dir = true;
  try {
    await Deno.stat(c.dir);
  } catch {
    dir = false;
  }
  return {
    netns: nsList.split("\n").some((l) => l.split(" ")[0] === c.netns),
    veth: (await rootLinks()).includes(c.vethName),
    livePids: pids.filter((pid) => {
      try {
        Deno.statSync(`/proc/${pid}`);
        return true;
      } catch {
        return false;
      }
    }),
    dir,
  };
}

/** The processes currently inside a namespace. */
export { netnsPids };
