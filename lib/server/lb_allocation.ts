/**
 * Which public ports a cluster's LoadBalancer Service ports get: a pure change on the registry, run
 * under `Registry.update`, so that the registry's own concurrency control (a file lock, or one
 * create-if-absent object per port in a host cluster) keeps two writers from taking one port.
 * @module
 */

import type { LoadBalancerPort, RegistryData } from "../registry/mod.ts";

/** A Service port that wants a public port. */
export interface WantedLbPort {
  service: string;
  port: number;
  protocol: "TCP" | "UDP";
}

/** What one allocation change did. */
export interface LbAllocation {
  added: LoadBalancerPort[];
  removed: LoadBalancerPort[];
  /** Wanted ports (by {@linkcode lbKey}) that got no public port, with why. */
  failures: Map<string, string>;
}

/** The identity of a Service port of a cluster: `CLUSTER/NS/NAME:PORT/PROTOCOL`. */
export function lbKey(a: Pick<LoadBalancerPort, "cluster" | "service" | "port" | "protocol">): string {
  return `${a.cluster}/${a.service}:${a.port}/${a.protocol}`;
}

/**
 * Makes `cluster`'s allocations in `data` match `wanted` (keyed by {@linkcode lbKey}): releases what is
 * no longer wanted, keeps what is allocated, and gives each new port the lowest free public port of
 * `range` for its protocol. Harmless to run again on data that already holds its result.
 */
export function allocateLbPorts(
  data: RegistryData,
  cluster: string,
  wanted: Map<string, WantedLbPort>,
  range: [number, number],
): LbAllocation {
  const out: LbAllocation = { added: [], removed: [], failures: new Map() };
  for (const a of data.loadBalancers) if (a.cluster === cluster && !wanted.has(lbKey(a))) out.removed.push(a);
  data.loadBalancers = data.loadBalancers.filter((a) => a.cluster !== cluster || wanted.has(lbKey(a)));
  const used = new Set(data.loadBalancers.map((a) => `${a.publicPort}/${a.protocol}`));
  const held = new Set(data.loadBalancers.map(lbKey));
  for (const [key, w] of wanted) {
    if (held.has(key)) continue;
    let free: number | undefined;
    for (let p = range[0]; p <= range[1]; p++) {
      if (!used.has(`${p}/${w.protocol}`)) {
        free = p;
        break;
      }
    }
    if (free === undefined) {
      out.failures.set(key, `no free ${w.protocol} port in ${range.join("-")}`);
      continue;
    }
    const alloc = { cluster, service: w.service, port: w.port, protocol: w.protocol, publicPort: free };
    used.add(`${free}/${w.protocol}`);
    data.loadBalancers.push(alloc);
    out.added.push(alloc);
  }
  return out;
}
