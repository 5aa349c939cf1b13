/**
 * Hub material in Secrets of the host cluster, shared by every hub replica: `tower-hub-ssh-host-key`,
 * `tower-hub-ca`, `tower-hub-peer-ca` and `tower-hub-serving-cert`. Whichever replica starts first creates
 * an item; a replica that loses the race (409 AlreadyExists) reads back the winner's, so all present one
 * fingerprint and one CA. A serving certificate that lacks a name is replaced at the version read.
 * @module
 */

import { hostname } from "node:os";
import * as k8s from "@kubernetes/client-node";
import { apiMessage, apiStatus, type HostCluster } from "../kube/host_cluster.ts";
import { managedLabels } from "../registry/k8s_resources.ts";
import { fingerprintOfKey } from "../tunnel/mod.ts";
import { issueServingCert, newHostKey, servingCertNames } from "./data_dir.ts";
import type { HubMaterial } from "./hub_material.ts";
import { type CertPair, createCa } from "./tls_material.ts";

/** The items of hub material, each in one Secret. */
export type MaterialItem = "ssh-host-key" | "ca" | "peer-ca" | "serving-cert";

/** Name of the Secret that holds an item. */
export function materialSecretName(item: MaterialItem): string {
  return `tower-hub-${item}`;
}

/** Hub material kept in Secrets of the host cluster's namespace. */
export function secretMaterial(host: HostCluster): HubMaterial {
  const core = host.kc.makeApiClient(k8s.CoreV1Api);
  const namespace = host.namespace;
  const read = async (item: MaterialItem) => {
    const name = materialSecretName(item);
    try {
      const s = await core.readNamespacedSecret({ name, namespace });
      const data = Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, atob(v)]));
      return { data, rv: s.metadata?.resourceVersion };
    } catch (e) {
      if (apiStatus(e) === 404) return undefined;
      throw new Error(`host cluster: read secrets/${name} in ${namespace}: ${apiMessage(e)}`);
    }
  };
  const body = (item: MaterialItem, data: Record<string, string>, rv?: string): k8s.V1Secret => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: materialSecretName(item),
      namespace,
      labels: { ...managedLabels, "tower.dev/hub-material": item },
      ...(rv ? { resourceVersion: rv } : {}),
    },
    type: "Opaque",
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, btoa(v)])),
  });
  /** The stored item, or `make()`'s once stored; the first writer wins. */
  const getOrCreate = async (item: MaterialItem, make: () => Promise<Record<string, string>>) => {
    const found = await read(item);
    if (found) return found.data;
    const made = await make();
    try {
      await core.createNamespacedSecret({ namespace, body: body(item, made) });
      return made;
    } catch (e) {
      if (apiStatus(e) !== 409) {
        throw new Error(`host cluster: create secrets/${materialSecretName(item)}: ${apiMessage(e)}`);
      }
    }
    const theirs = await read(item);
    if (!theirs) {
      throw new Error(`host cluster: secrets/${materialSecretName(item)} was created and is gone again`);
    }
    return theirs.data;
  };
  const caOf = async (item: "ca" | "peer-ca", name: string): Promise<CertPair> => {
    const { cert, key } = await getOrCreate(
      item,
      () => createCa(`${name} (${hostname()})`).then((c) => ({ ...c })),
    );
    if (!cert || !key) throw new Error(`host cluster: secrets/${materialSecretName(item)} lacks cert or key`);
    return { cert, key };
  };
  return {
    caLocation: `secret/${materialSecretName("ca")} (namespace ${namespace}, key cert)`,
    async hostKey() {
      const { key } = await getOrCreate("ssh-host-key", () => Promise.resolve({ key: newHostKey() }));
      if (!key) throw new Error(`host cluster: secrets/${materialSecretName("ssh-host-key")} lacks key`);
      return { key, fingerprint: fingerprintOfKey(key) };
    },
    ca: () => caOf("ca", "Tower hub CA"),
    peerCa: () => caOf("peer-ca", "Tower peer CA"),
    async servingCert(ca, extraNames, supplied) {
      if (supplied) {
        return {
          cert: await Deno.readTextFile(supplied.certFile),
          key: await Deno.readTextFile(supplied.keyFile),
        };
      }
      for (let attempt = 0; attempt < 5; attempt++) {
        const found = await read("serving-cert");
        const { cert, key } = found?.data ?? {};
        if (cert && key && servingCertNames(cert, extraNames, false)) return { cert, key };
        const leaf = await issueServingCert(ca, extraNames);
        try {
          if (found) {
            await core.replaceNamespacedSecret({
              name: materialSecretName("serving-cert"),
              namespace,
              body: body("serving-cert", { ...leaf }, found.rv),
            });
          } else await core.createNamespacedSecret({ namespace, body: body("serving-cert", { ...leaf }) });
          return leaf;
        } catch (e) {
          // Another replica wrote it meanwhile: look again.
          if (apiStatus(e) !== 409) {
            throw new Error(
              `host cluster: write secrets/${materialSecretName("serving-cert")}: ${apiMessage(e)}`,
            );
          }
        }
      }
      throw new Error(`host cluster: secrets/${materialSecretName("serving-cert")} keeps changing`);
    },
  };
}
