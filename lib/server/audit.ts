/**
 * The audit trail: one JSON line per proxied request, and one per upgraded stream when it ends. Who,
 * which cluster, what, the outcome and its size — never a credential.
 * @module
 */

import { logger } from "../log/log.ts";

/** One audit record. */
export interface AuditEntry {
  user: string | undefined;
  groups: string[] | undefined;
  cluster: string;
  method: string;
  verb: string;
  path: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  agent: string | undefined;
  upgraded?: boolean;
  error?: string;
  remote?: string | undefined;
}

/** Where audit lines go. */
export interface AuditLog {
  record(entry: AuditEntry): void;
  close(): Promise<void>;
}

/** Opens the audit log: `-` for stdout, else a file appended to. */
export async function openAuditLog(target: string): Promise<AuditLog> {
  const enc = new TextEncoder();
  if (target === "-") {
    return {
      record: (e) =>
        void Deno.stdout.writeSync(
          enc.encode(JSON.stringify({ time: new Date().toISOString(), ...e }) + "\n"),
        ),
      close: () => Promise.resolve(),
    };
  }
  const file = await Deno.open(target, { append: true, create: true, mode: 0o600 });
  const log = logger({ component: "audit" });
  let pending = Promise.resolve();
  return {
    record: (e) => {
      const line = enc.encode(JSON.stringify({ time: new Date().toISOString(), ...e }) + "\n");
      pending = pending.then(async () => {
        for (let off = 0; off < line.length;) off += await file.write(line.subarray(off));
      }).catch((err) => log.error("audit line not written", { error: err }));
    },
    close: async () => {
      await pending;
      file.close();
    },
  };
}
