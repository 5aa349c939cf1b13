/**
 * Short-lived client certificates: `kubeconfig --ttl`, the hub's default and maximum (`settings`), and a
 * running hub refusing an expired certificate with 401 and "certificate expired" in the Status message.
 * @module
 */

import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import YAML from "yaml";
import { type HubProcess, scratchDir, serverCommand, startHub } from "../helpers/tower_procs.ts";

async function must(args: string[]): Promise<string> {
  const r = await serverCommand(args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** The client certificate, key and its validity window from a kubeconfig `kubeconfig --user` printed. */
function certOf(kubeconfig: string): { cert: string; key: string; notBefore: Date; notAfter: Date } {
  const user = YAML.parse(kubeconfig).users[0].user;
  const cert = atob(user["client-certificate-data"]);
  const parsed = new x509.X509Certificate(cert);
  return { cert, key: atob(user["client-key-data"]), notBefore: parsed.notBefore, notAfter: parsed.notAfter };
}

Deno.test("kubeconfig --ttl: hub default 8h, a shorter ttl, a longer one refused until the maximum is raised", async () => {
  const dir = await scratchDir("certttl");
  try {
    await must(["cluster", "add", "alpha", "--data-dir", dir]);
    await must(["user", "add", "ann", "--data-dir", dir]);
    await must(["access", "allow", "--user", "ann", "--clusters", "*", "--data-dir", dir]);
    const kc = (ttl?: string[]) =>
      serverCommand(["kubeconfig", "--data-dir", dir, "--user", "ann", ...(ttl ?? [])]);
    const hours = (c: { notAfter: Date }) => (c.notAfter.getTime() - Date.now()) / 3_600_000;

    const dflt = certOf((await kc()).stdout);
    assert.ok(hours(dflt) > 7.9 && hours(dflt) <= 8, `default lifetime ${hours(dflt)} h`);
    assert.ok(Date.now() - dflt.notBefore.getTime() <= 5 * 60_000 + 2000, "backdated at most 5 minutes");
    const short = certOf((await kc(["--ttl", "90m"])).stdout);
    assert.ok(hours(short) > 1.45 && hours(short) <= 1.5, `90m lifetime ${hours(short)} h`);

    const long = await kc(["--ttl", "9h"]);
    assert.equal(long.code, 2, long.stderr);
    assert.match(long.stderr, /--ttl 9h is longer than this hub allows \(8h; settings --client-cert-max-ttl/);
    assert.match(
      await must(["settings", "--data-dir", dir, "--client-cert-max-ttl", "2d"]),
      /8h \(maximum 2d\)/,
    );
    assert.ok(hours(certOf((await kc(["--ttl", "9h"])).stdout)) > 8.9);
    assert.match(
      await must(["settings", "--data-dir", dir, "--client-cert-ttl", "1h"]),
      /lifetime: 1h \(maximum 2d\)/,
    );
    assert.ok(hours(certOf((await kc()).stdout)) <= 1);
    const over = await serverCommand(["settings", "--data-dir", dir, "--client-cert-max-ttl", "30m"]);
    assert.equal(over.code, 2);
    assert.match(over.stderr, /lifetime 1h exceeds the maximum 30m/);
    const bad = await kc(["--ttl", "soon"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ttl: 'soon' is not a duration/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a running hub refuses an expired client certificate with 401 'certificate expired'", async () => {
  const dir = await scratchDir("certttl");
  let hub: HubProcess | undefined;
  try {
    await must(["cluster", "add", "alpha", "--data-dir", dir]);
    await must(["user", "add", "ann", "--data-dir", dir]);
    await must(["access", "allow", "--user", "ann", "--clusters", "*", "--data-dir", dir]);
    hub = await startHub({ dataDir: dir });
    const ca = await Deno.readTextFile(`${dir}/ca.crt`);
    const c = certOf(await must(["kubeconfig", "--data-dir", dir, "--user", "ann", "--ttl", "4s"]));
    const call = async () => {
      const client = Deno.createHttpClient({ caCerts: [ca], cert: c.cert, key: c.key });
      try {
        const r = await fetch(`https://127.0.0.1:${hub!.port}/clusters/alpha/api`, { client });
        return { status: r.status, body: await r.text() };
      } finally {
        client.close();
      }
    };
    // Valid: authenticated and allowed; the cluster has no agent, so 503.
    assert.equal((await call()).status, 503);
    // Expiry is the event under test: wait for the wall clock to pass notAfter.
    await new Promise((r) => setTimeout(r, Math.max(0, c.notAfter.getTime() - Date.now()) + 1100));
    const after = await call();
    assert.equal(after.status, 401, after.body);
    const status = JSON.parse(after.body);
    assert.equal(status.kind, "Status");
    assert.equal(status.code, 401);
    assert.match(status.message, /client certificate expired at \S+; get a new kubeconfig/);
  } finally {
    await hub?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
