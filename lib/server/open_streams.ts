/**
 * Requests and streams in flight through the hub, so that a registry change takes effect on them too: an
 * exec, port-forward, `forward` or watch of a user who is removed, whose credentials are revoked or
 * whose access rule is gone is closed when the hub sees the change, and its audit line says why.
 * @module
 */

import type { RegistryData } from "../registry/mod.ts";
import { type Identity, mayReach } from "./user_auth.ts";

/** One request or stream being served. */
export interface OpenStream {
  who: Identity;
  cluster: string;
  /** {@link credentialStamp} when it was admitted. */
  credential: string | undefined;
  /** Ends it at once; `reason` goes into its audit line. */
  close(reason: string): void;
}

/**
 * What a registry-backed credential of `who` is worth now: the user's certificate epoch or token hash.
 * It changes when the user is removed, re-added, or their certificates are revoked.
 */
export function credentialStamp(who: Identity, registry: RegistryData): string | undefined {
  const user = registry.users.find((u) => u.name === who.user);
  if (!user) return undefined;
  return who.via === "certificate" ? `cert:${user.certEpoch ?? ""}` : `token:${user.tokenHash ?? ""}`;
}

/** Why `s` may no longer run under `registry`, or undefined when it still may. */
function revocationOf(s: OpenStream, registry: RegistryData): string | undefined {
  // Only identities that the registry vouches for can be judged against it.
  if (s.who.via !== "certificate" && s.who.via !== "token") return undefined;
  const user = registry.users.find((u) => u.name === s.who.user);
  if (!user) return "user removed";
  if (credentialStamp(s.who, registry) !== s.credential) return "credentials revoked";
  if (!mayReach({ ...s.who, groups: user.groups }, s.cluster, registry)) return "access revoked";
  return undefined;
}

/**
 * Requests and streams one user may have open at once through one hub. Each holds an SSH channel to an
 * agent (and, for an upgrade, a socket on the API server), so one user must not be able to take every
 * channel of a cluster's agents. 500 is far above what a person or a controller needs (kubectl holds a
 * handful; a controller one watch per resource type) and well below what an agent carries.
 */
export const maxOpenPerUser = 500;

/** The open streams of one hub. Entries live as long as their connections, so the set is bounded by them. */
export class OpenStreams {
  readonly #streams = new Set<OpenStream>();
  readonly #perUser = new Map<string, number>();
  readonly #closing = new WeakSet<OpenStream>();
  /** Most requests one user may have open. */
  readonly maxPerUser: number;

  constructor(maxPerUser = maxOpenPerUser) {
    this.maxPerUser = maxPerUser;
  }

  /** Whether `user` may open one more (below {@link OpenStreams.maxPerUser}). */
  hasRoomFor(user: string): boolean {
    return (this.#perUser.get(user) ?? 0) < this.maxPerUser;
  }

  /** Tracks `s` until the returned function is called. */
  track(s: OpenStream): () => void {
    this.#streams.add(s);
    this.#perUser.set(s.who.user, (this.#perUser.get(s.who.user) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#streams.delete(s);
      const n = (this.#perUser.get(s.who.user) ?? 1) - 1;
      if (n > 0) this.#perUser.set(s.who.user, n);
      else this.#perUser.delete(s.who.user);
    };
  }

  /** How many are open. */
  get size(): number {
    return this.#streams.size;
  }

  /** Closes every stream that `registry` no longer allows; returns the reasons of those closed. */
  revoke(registry: RegistryData): string[] {
    const closed: string[] = [];
    for (const s of [...this.#streams]) {
      const reason = revocationOf(s, registry);
      if (!reason || this.#closing.has(s)) continue;
      // It stays counted until it has ended (its untrack), but is closed only once.
      this.#closing.add(s);
      closed.push(reason);
      s.close(reason);
    }
    return closed;
  }
}
