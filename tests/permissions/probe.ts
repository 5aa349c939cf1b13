/**
 * Tries what a Tower process might try, under whatever permission set it is run with, and prints one
 * JSON object: for each attempt, "ok" or the error's name (NotCapable when the set denies it). Used by
 * permissions_test.ts; it sends no traffic anywhere but loopback (a denied connect never leaves).
 * @module
 */
// deno-lint-ignore-file no-console

/** TEST-NET-1 (RFC 5737): never routed, so even a wrongly allowed dial reaches nobody. */
const elsewhere = { hostname: "192.0.2.1", port: 443 };

async function attempt(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return "ok";
  } catch (e) {
    return (e as Error).name;
  }
}

const results: Record<string, string> = {};
const withTimeout = <T>(p: Promise<T>) =>
  Promise.race([p, new Promise<never>((_, no) => setTimeout(() => no(new Error("Timeout")), 2000))]);

results.listenAny = await attempt(() => Deno.listen({ hostname: "0.0.0.0", port: 0 }).close());
results.listenLoopback = await attempt(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }).close());
results.dialElsewhere = await attempt(async () => (await withTimeout(Deno.connect(elsewhere))).close());
// The cloud instance-metadata service (instance credentials); a denied dial sends nothing.
results.dialMetadata = await attempt(async () =>
  (await withTimeout(Deno.connect({ hostname: "169.254.169.254", port: 80 }))).close()
);
results.fetchElsewhere = await attempt(() => withTimeout(fetch("https://192.0.2.1/")));
results.readEtc = await attempt(() => Deno.readTextFile("/etc/hostname"));
results.readDataDir = await attempt(() => Deno.stat("/tmp/tower"));
results.readServiceAccount = Deno.permissions.querySync({
  name: "read",
  path: "/var/run/secrets/kubernetes.io/serviceaccount/token",
}).state;
results.writeOutside = await attempt(() => Deno.writeTextFile("/tmp/tower-permission-probe", "x"));
results.writeDataDir = await attempt(async () => {
  const f = `/tmp/tower/permission-probe-${crypto.randomUUID()}`;
  await Deno.writeTextFile(f, "x");
  await Deno.remove(f);
});
results.run = await attempt(() => new Deno.Command("true").output());
results.ffi = await attempt(() => Deno.dlopen("libc.so.6", {}));
results.envHome = await attempt(() => {
  if (Deno.env.get("HOME") !== undefined) return;
  throw Object.assign(new Error("hidden"), { name: "Hidden" });
});
results.envTower = await attempt(() => Deno.env.get("TOWER_PROBE"));
console.log(JSON.stringify(results));
