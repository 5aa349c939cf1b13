/**
 * The status page's HTML, rendered on the hub: clusters with their agents, request and error rates as
 * small charts, open streams, LoadBalancer ports, recent refusals. The live sections are rendered by the
 * same functions for the first page and for every Server-Sent Event, so the browser script only swaps
 * them in. No build step, no external asset.
 * @module
 */

import type { ClustersResponse } from "./admin_api.ts";
import type { LbPortView } from "./replica_snapshot.ts";
import type { RateSeries, Refusal } from "./status_history.ts";

/** Everything the page shows. */
export interface StatusView {
  clusters: ClustersResponse;
  rates: Record<string, RateSeries>;
  lbPorts: LbPortView[];
  refusals: Refusal[];
  /** When the view was taken. */
  at: Date;
}

/** Where the page's two assets are served. */
export const assetPaths = { script: "/_tower/status.js", style: "/_tower/status.css" } as const;

/** Escapes text for HTML content and attribute values. */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function clock(iso: string | Date): string {
  return (typeof iso === "string" ? iso : iso.toISOString()).slice(11, 19);
}

function age(fromIso: string, now: Date): string {
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(fromIso)) / 1000));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 48 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function rate(n: number): string {
  return n >= 10 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n === 0 ? "0" : n.toFixed(2);
}

/** A small line chart of per-second values over the last 15 minutes, with a text equivalent. */
export function sparkline(
  values: number[],
  label: string,
  kind: "requests" | "errors",
  now = values.at(-1) ?? 0,
): string {
  const w = 180;
  const h = 36;
  const peak = Math.max(...values, 0);
  const scale = peak > 0 ? (h - 4) / peak : 0;
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - v * scale).toFixed(1)}`).join(" ");
  const text = `${label}: ${rate(now)}/s now, peak ${rate(peak)}/s over the last 15 minutes`;
  return `<figure class="chart ${kind}"><svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" ` +
    `aria-label="${esc(text)}"><title>${esc(text)}</title><line x1="0" y1="${h - 1}" x2="${w}" y2="${
      h - 1
    }" ` +
    `class="axis"/><polyline points="${points}"/></svg><figcaption>${esc(label)} ` +
    `<strong>${rate(now)}/s</strong> <span class="peak">peak ${rate(peak)}/s</span></figcaption></figure>`;
}

type ClusterRow = ClustersResponse["clusters"][number];

function stateOf(c: ClusterRow): { word: string; cls: string } {
  if (c.agents.length === 0) return { word: "no agent", cls: "down" };
  if (c.agents.every((a) => a.late)) return { word: "late", cls: "late" };
  return { word: "connected", cls: "up" };
}

function clusterCard(c: ClusterRow, rates: RateSeries | undefined, now: Date): string {
  const state = stateOf(c);
  const agents = c.agents.length
    ? `<ul class="agents">${
      c.agents.map((a) =>
        `<li data-agent="${esc(a.id)}"><span class="mono">${esc(a.id)}</span> on <b>${esc(a.replica)}</b>, ` +
        `v${esc(a.version ?? "?")}, since ${clock(a.since)} UTC (${age(a.since, now)}), ` +
        `${a.openChannels} channel${a.openChannels === 1 ? "" : "s"}` +
        (a.late ? ` <span class="badge late">late keepalive</span>` : "") + `</li>`
      ).join("")
    }</ul>`
    : `<p class="none">No agent is connected to any replica.</p>`;
  const streams = Object.entries(c.streams);
  const zeros = new Array<number>(90).fill(0);
  return `<article class="cluster" data-cluster="${esc(c.name)}" data-agents="${c.agents.length}" ` +
    `aria-labelledby="c-${esc(c.name)}"><header><h3 id="c-${esc(c.name)}">${esc(c.name)}</h3>` +
    `<span class="badge ${state.cls}">${state.word}</span></header>` +
    `<p class="meta">${esc(c.mode)}${c.port ? `, port ${c.port}` : ""}${
      Object.entries(c.labels).map(([k, v]) => ` <span class="label">${esc(k)}=${esc(v)}</span>`).join("")
    }</p>` +
    `<h4>Agents (${c.agents.length})</h4>${agents}` +
    `<div class="charts">${sparkline(rates?.requests ?? zeros, "Requests", "requests", rates?.now.requests)}${
      sparkline(rates?.errors ?? zeros, "Errors", "errors", rates?.now.errors)
    }</div>` +
    `<p class="streams">Open streams: ${
      streams.length ? streams.map(([k, n]) => `${esc(k)} ${n}`).join(", ") : "none"
    }</p></article>`;
}

/** The inner HTML of each live section, by element id. */
export function renderSections(v: StatusView): Record<string, string> {
  const lb = v.lbPorts.length
    ? `<table><caption class="sr">LoadBalancer ports</caption><thead><tr><th scope="col">Cluster</th>` +
      `<th scope="col">Service</th><th scope="col">Port</th><th scope="col">Public port</th>` +
      `<th scope="col">Replica</th><th scope="col">Open flows</th></tr></thead><tbody>${
        v.lbPorts.map((p) =>
          `<tr><td>${esc(p.cluster)}</td><td>${esc(p.service)}</td><td>${p.port}/${p.protocol}</td>` +
          `<td>${p.publicPort}</td><td>${esc(p.replica)}</td><td>${p.flows}</td></tr>`
        ).join("")
      }</tbody></table>`
    : `<p class="none">No LoadBalancer port is allocated.</p>`;
  const refusals = v.refusals.length
    ? `<table><caption class="sr">Recent refusals, newest first</caption><thead><tr>` +
      `<th scope="col">Time (UTC)</th><th scope="col">What</th><th scope="col">Cluster</th>` +
      `<th scope="col">Code</th><th scope="col">User</th><th scope="col">Reason</th></tr></thead><tbody>${
        v.refusals.map((r) =>
          `<tr><td>${clock(r.time)}</td><td>${r.what}</td><td>${esc(r.cluster)}</td><td>${
            r.code || "-"
          }</td>` +
          `<td>${esc(r.user ?? "-")}</td><td>${esc(r.reason)}</td></tr>`
        ).join("")
      }</tbody></table>`
    : `<p class="none">Nothing refused recently.</p>`;
  const replicas =
    v.clusters.replicas.map((r) =>
      `${esc(r.name)} (v${esc(r.version)}, ${
        r.requests.ordinary + r.requests.longRunning
      } requests in flight${r.requests.draining ? ", <strong>draining</strong>" : ""})`
    ).join(", ") +
    (v.clusters.unreachable.length
      ? `; <strong>not answering: ${v.clusters.unreachable.map(esc).join(", ")}</strong>`
      : "");
  const sessions = v.clusters.clusters.reduce((n, c) => n + c.agents.length, 0);
  return {
    summary: `${v.clusters.clusters.length} cluster${v.clusters.clusters.length === 1 ? "" : "s"}, ${
      sessions === 1 ? "1 agent session" : `${sessions} agent sessions`
    } on ${replicas}.`,
    clusters: v.clusters.clusters.length
      ? v.clusters.clusters.map((c) => clusterCard(c, v.rates[c.name], v.at)).join("")
      : `<p class="none">No cluster is registered (main_server.ts cluster add NAME).</p>`,
    "lb-ports": lb,
    refusals,
  };
}

function shell(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${esc(title)}</title><link rel="stylesheet" href="${assetPaths.style}"></head>` +
    `<body>${body}</body></html>`;
}

/** The whole status page for an admin. */
export function renderStatusPage(v: StatusView, who: string): string {
  const s = renderSections(v);
  return shell(
    "Tower hub status",
    `<header class="top"><h1>Tower hub</h1><p id="live">` +
      `Updated ${clock(v.at)} UTC</p><p class="who">Signed in as ${esc(who)}</p></header>` +
      `<main><p id="summary" role="status" aria-live="polite">${s.summary}</p>` +
      `<section aria-labelledby="h-clusters"><h2 id="h-clusters">Clusters</h2>` +
      `<div id="clusters" class="grid">${s.clusters}</div></section>` +
      `<section aria-labelledby="h-lb"><h2 id="h-lb">LoadBalancer ports</h2>` +
      `<div id="lb-ports" class="scroll">${s["lb-ports"]}</div></section>` +
      `<section aria-labelledby="h-ref"><h2 id="h-ref">Recent refusals</h2>` +
      `<div id="refusals" class="scroll">${s.refusals}</div></section></main>` +
      `<script src="${assetPaths.script}" defer></script>`,
  );
}

/** The page for callers who are not (yet) admins: how to sign in, or why they may not look. */
export function refusalPage(code: 401 | 403, message: string): string {
  const hint = code === 401
    ? `<p>This page is for the hub's administrators. Sign in with what the hub knows you by:</p><ul>` +
      `<li>a client certificate issued by this hub (<code>main_server.ts kubeconfig --user NAME</code> ` +
      `writes one; import it into your browser), or</li><li>a bearer token ` +
      `(<code>Authorization: Bearer TOKEN</code>) from <code>main_server.ts user add NAME --token</code>.</li></ul>` +
      `<p>Your user must be in the hub's admin group (<code>serve --admin-group GROUP</code>).</p>`
    : `<p>You are signed in, but not as an administrator of this hub. Ask an administrator to add you to ` +
      `the admin group.</p>`;
  return shell(
    code === 401 ? "Sign in to Tower" : "Not an administrator",
    `<main class="narrow"><h1>${code === 401 ? "Sign in to Tower" : "Not an administrator"}</h1>${hint}` +
      `<p class="reason">${esc(message)}</p></main>`,
  );
}

/** The page's stylesheet: readable on a phone, AA contrast, state shown in words as well as colour. */
export const statusCss = `
:root { color-scheme: light; --fg: #1b1f24; --muted: #4a5360; --line: #d0d7de; --bg: #ffffff; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
header.top { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; align-items: baseline; padding: .75rem 1rem;
  border-bottom: 1px solid var(--line); }
header.top h1 { font-size: 1.35rem; margin: 0; }
header.top p { margin: 0; color: var(--muted); }
main { padding: 0 1rem 2rem; max-width: 1200px; }
main.narrow { max-width: 40rem; margin: 2rem auto; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1.05rem; margin: 0; overflow-wrap: anywhere; }
h4 { font-size: .9rem; margin: .5rem 0 .25rem; color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr)); gap: .75rem; }
.cluster { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .75rem; }
.cluster header { display: flex; justify-content: space-between; align-items: center; gap: .5rem; }
.meta, .streams, .none { color: var(--muted); margin: .25rem 0; }
.label { font-family: ui-monospace, monospace; font-size: .85rem; border: 1px solid var(--line);
  border-radius: 3px; padding: 0 .25rem; }
.agents { margin: 0; padding-left: 1.1rem; font-size: .9rem; }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .88em; }
.badge { font-size: .8rem; font-weight: 600; border-radius: 999px; padding: .05rem .55rem; white-space: nowrap; }
.badge.up { color: #0b5d27; background: #dcf3e3; }
.badge.down { color: #8c1118; background: #fde2e2; }
.badge.late { color: #6b4200; background: #fff0c2; }
.charts { display: flex; flex-wrap: wrap; gap: .5rem 1rem; }
.chart { margin: .25rem 0 0; }
.chart svg { display: block; max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line); }
.chart polyline { fill: none; stroke-width: 1.5; }
.chart.requests polyline { stroke: #0550ae; }
.chart.errors polyline { stroke: #a40e26; }
.chart .axis { stroke: var(--line); }
.chart figcaption { font-size: .85rem; color: var(--muted); }
.chart figcaption strong { color: var(--fg); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (max-width: 480px) { body { font-size: 15px; } main { padding: 0 .5rem 1.5rem; } }
`;

/** The page's script: one EventSource; each event swaps the live sections in. */
export const statusScript = `"use strict";
(() => {
  const live = document.getElementById("live");
  const source = new EventSource("/api/tower/v1/events");
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    for (const [id, html] of Object.entries(data.sections)) {
      const el = document.getElementById(id);
      if (el && el.innerHTML !== html) el.innerHTML = html;
    }
    live.textContent = "Live, updated " + data.updated + " UTC";
  });
  // EventSource reconnects by itself; say so meanwhile.
  source.addEventListener("error", () => { live.textContent = "Connection lost, reconnecting…"; });
})();
`;
