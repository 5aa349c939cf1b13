/**
 * The status page in a real browser: Debian's headless Chromium, driven by playwright-core, loads `/` as
 * an admin, sees both clusters, and sees an agent disappear without a reload once it is killed. Screenshots
 * (desktop and phone width) are kept in a scratch dir, whose path the test prints.
 */

import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { Buffer } from "node:buffer";
import { chromium, type Page } from "playwright-core";
import { startTowerEnv } from "./tower_env.ts";
import { scratchDir } from "../helpers/tower_procs.ts";

const chromiumPath = "/usr/bin/chromium";
const adminGroup = "tower-admins";

/** base64 SHA-256 of a certificate's public key: what Chromium's SPKI allowlist takes. */
function spkiHash(pem: string): string {
  const der = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }) as Buffer;
  return createHash("sha256").update(der).digest("base64");
}

Deno.test({
  name:
    "status page in headless Chromium: both clusters live; a killed agent disappears within 3 s, no reload",
  ignore: !(await Deno.stat(chromiumPath).then(() => true, () => false)),
  fn: async () => {
    const env = await startTowerEnv({
      clusters: ["page-a", "page-b"],
      hubArgs: ["--admin-group", adminGroup],
    });
    const shots = await scratchDir("status-page");
    const profile = await Deno.makeTempDir({ dir: shots, prefix: "chromium-profile-" });
    // Trust exactly the hub's serving certificate, nothing broader.
    const cert = await Deno.readTextFile(`${env.dataDir}/server.crt`);
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      viewport: { width: 1100, height: 760 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--ignore-certificate-errors-spki-list=${spkiHash(cert)}`,
      ],
    });
    const base = `https://127.0.0.1:${env.hub.port}`;
    const http = Deno.createHttpClient({
      caCerts: [await Deno.readTextFile(env.added.get("page-a")!.caFile)],
    });
    const pageAs = async (token: string | undefined): Promise<Page> => {
      const page = await context.newPage();
      if (token) await page.setExtraHTTPHeaders({ authorization: `Bearer ${token}` });
      return page;
    };
    try {
      const admin = await env.addTokenUser("ops", [adminGroup], []);
      const dev = await env.addTokenUser("dev", ["devs"], ["*"]);
      const kube = await env.addUser("kube", ["system:masters"], ["*"]);

      // Anonymous: 401 with how to sign in. Not an admin: 403.
      const anon = await pageAs(undefined);
      const anonRes = await anon.goto(base + "/");
      assert.equal(anonRes?.status(), 401);
      assert.match(await anon.locator("h1").innerText(), /Sign in/);
      assert.ok((await anon.content()).includes("--admin-group"));
      await anon.close();
      const user = await pageAs(dev);
      // The hub reads new users from its registry within a second.
      let devStatus = 0;
      for (let i = 0; i < 20 && devStatus !== 403; i++) {
        devStatus = (await user.goto(base + "/"))?.status() ?? 0;
        if (devStatus !== 403) await user.waitForTimeout(250);
      }
      assert.equal(devStatus, 403);
      assert.match(await user.locator("h1").innerText(), /Not an administrator/);
      await user.close();

      const page = await pageAs(admin);
      const res = await page.goto(base + "/");
      assert.equal(res?.status(), 200);
      for (const name of ["page-a", "page-b"]) {
        await page.locator(`[data-cluster="${name}"][data-agents="1"]`).waitFor({ timeout: 10_000 });
      }
      assert.equal(await page.locator("html").getAttribute("lang"), "en");
      assert.equal(
        await page.locator("svg[role=img]:not([aria-label])").count(),
        0,
        "every chart has a text equivalent",
      );
      // Some traffic, so the chart and the refusals table have something to show.
      const got = await env.kubectl(kube, ["--context", "page-a", "get", "namespaces"]);
      assert.equal(got.code, 0, got.stderr);
      await env.kubectl(kube, ["--context", "page-a", "get", "--raw", "/api/v1/namespaces/nope"]);
      // A request the hub refuses itself: it shows among the recent refusals.
      const refused = await fetch(`${base}/clusters/page-a/api`, {
        client: http,
        headers: { authorization: "Bearer wrong" },
      });
      assert.equal(refused.status, 401);
      await refused.body?.cancel();
      // The peak holds for 15 minutes; the "now" figure may already have slid back to 0 on a slow machine.
      await page.locator('[data-cluster="page-a"] .chart.requests .peak:not(:text-is("peak 0/s"))')
        .waitFor({ timeout: 10_000 });
      await page.locator("#refusals td", { hasText: "Unauthorized: unknown token" }).waitFor({
        timeout: 10_000,
      });

      // Live update: kill page-b's agent; the card shows no agent within 3 s, in the same document.
      await page.evaluate(() => {
        (globalThis as unknown as { sameDocument: boolean }).sameDocument = true;
      });
      const killedAt = performance.now();
      await env.agents.get("page-b")!.stop("SIGKILL");
      await page.locator('[data-cluster="page-b"][data-agents="0"]').waitFor({ timeout: 3000 });
      const seenMs = performance.now() - killedAt;
      assert.ok(seenMs <= 3000, `the page showed the agent gone after ${Math.round(seenMs)} ms`);
      assert.equal(
        await page.evaluate(() => (globalThis as unknown as { sameDocument?: boolean }).sameDocument),
        true,
        "no reload",
      );
      assert.match(await page.locator('[data-cluster="page-b"] .badge').innerText(), /no agent/);
      assert.equal(await page.locator('[data-cluster="page-a"][data-agents="1"]').count(), 1);
      await page.screenshot({ path: `${shots}/status-desktop.png`, fullPage: true });
      await page.setViewportSize({ width: 390, height: 844 });
      await page.screenshot({ path: `${shots}/status-phone.png`, fullPage: true });
      const overflow = await page.evaluate(
        "document.documentElement.scrollWidth - window.innerWidth",
      ) as number;
      assert.ok(overflow <= 0, `the page scrolls sideways on a phone by ${overflow}px`);
      // deno-lint-ignore no-console
      console.log(
        `screenshots: ${shots}/status-desktop.png, ${shots}/status-phone.png (seen gone in ${
          Math.round(seenMs)
        } ms)`,
      );
    } finally {
      http.close();
      await context.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      await env.stop();
    }
  },
});
