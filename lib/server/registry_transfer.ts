/**
 * `registry export` and `registry import`: the whole registry as the YAML the file backend stores, so a
 * file registry moves into a host cluster (and back) with nothing lost: token hashes, creation and
 * rotation times, modes, ports, users with groups and extras, access rules in order, LB allocations.
 * @module
 */

import YAML from "yaml";
import { ConfigError } from "../config/mod.ts";
import { type RegistryData, validateRegistry } from "../registry/mod.ts";
import type { HubStorage } from "./hub_storage.ts";

/** The registry as YAML (token hashes only; no secret material). */
export async function exportRegistry(storage: HubStorage): Promise<string> {
  const data = await storage.registry.read();
  // A Cluster applied with kubectl and never given a token has no hash: the file format needs one.
  const incomplete = data.clusters.filter((c) => !c.tokenHash).map((c) => c.name);
  if (incomplete.length) {
    throw new ConfigError(
      `cluster(s) ${incomplete.join(", ")} have no join token yet (cluster rotate-token NAME gives one)`,
    );
  }
  return "# Tower hub registry export. Token hashes only.\n" + YAML.stringify(data);
}

/** What an import changed. */
export interface ImportSummary {
  clusters: number;
  users: number;
  access: number;
  loadBalancers: number;
}

/**
 * Replaces the registry's contents with `text` (YAML as exported). Refuses to overwrite a registry that
 * already holds clusters, users or access rules unless `replace` is set.
 */
export async function importRegistry(
  storage: HubStorage,
  text: string,
  replace: boolean,
): Promise<ImportSummary> {
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`registry import: not valid YAML: ${(e as Error).message}`);
  }
  const incoming: RegistryData = validateRegistry(raw, "registry import");
  await storage.registry.update((data) => {
    if (!replace && (data.clusters.length || data.users.length || data.access.length)) {
      throw new ConfigError(
        `the target registry is not empty (${data.clusters.length} clusters, ${data.users.length} users, ` +
          `${data.access.length} access rules); use --replace to overwrite it`,
      );
    }
    data.settings = incoming.settings;
    data.clusters = incoming.clusters;
    data.users = incoming.users;
    data.access = incoming.access;
    data.loadBalancers = incoming.loadBalancers;
  });
  return {
    clusters: incoming.clusters.length,
    users: incoming.users.length,
    access: incoming.access.length,
    loadBalancers: incoming.loadBalancers.length,
  };
}
