// The operators' console (README "The operators' console"): status, the lag chart, dead letters, drills.
// Every call carries the operator's bearer token (TF.api); the drill's output is read from a fetch()
// stream (EventSource cannot send an Authorization header) and parsed as server-sent events.
"use strict";
(() => {
  const { el, api, errorText, session } = TF;
  const billing = TF.meta("billing");
  const own = "";  // this daemon (the portal): same origin
  const $ = (id) => document.getElementById(id);
  let timers = [];

  const up = (state) => state === "up" || String(state).startsWith("up");
  const stateBadge = (state) => el("span", { class: "state", "data-up": up(state) ? "yes" : "no" }, String(state));

  async function refreshStatus() {
    $("status-read").textContent = "Reading ticketflow status…";
    const r = await api(own, "GET", "/api/ops/status");
    if (r.status !== 200) { $("status-read").textContent = `Status unavailable: ${errorText(r)}`; return; }
    const report = r.body.report;
    $("servers").replaceChildren(...Object.entries(report.servers || {}).map(([name, state]) =>
      el("li", { "data-server": name }, stateBadge(state), ` ${name}`)));
    const daemons = Object.entries(report.daemons || {});
    const running = daemons.filter(([, d]) => d.state === "up").length;
    $("daemons").replaceChildren(
      el("li", { id: "daemons-summary", class: running === daemons.length ? "ok" : "error" },
         running === daemons.length ? `All ${daemons.length} daemons up` : `${running} of ${daemons.length} daemons up`),
      ...daemons.map(([name, d]) => el("li", { "data-daemon": name }, stateBadge(d.state), ` ${name}`,
        el("span", { class: "muted" }, ` ${d.url}` + (d.pid ? `, pid ${d.pid}` : "") +
          (d.instance ? `, answers as ${d.instance}` : "") + (d.restarts ? `, restarted ${d.restarts}×` : "")))));
    renderCluster(report);
    $("status-read").textContent = `Read ${new Date(r.body.read_at).toLocaleTimeString()}: ` +
      (r.body.healthy ? "everything up" : "something is down or unhealthy");
  }

  // Cluster roles, one table per part of the HA topology (`ticketflow status --topology ha --json`'s
  // "cluster": PostgreSQL under Patroni, etcd, Galera with its writer, RabbitMQ with its quorum queues,
  // HAProxy's backends); a part the topology does not run is simply absent.
  function table(caption, head, rows) {
    return el("table", { class: "roles" }, el("caption", {}, caption),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) =>
        el("td", {}, c === null || c === undefined ? "—" : String(c)))))));
  }

  function renderCluster(report) {
    const cluster = $("cluster");
    cluster.replaceChildren();
    const c = report.cluster;
    if (!c) return;
    cluster.append(el("h3", {}, `Cluster roles (${report.topology})`));
    if (c.postgres) cluster.append(table("PostgreSQL (Patroni)", ["node", "role", "state", "timeline", "lag (bytes)"],
      c.postgres.map((m) => m.error ? [m.error, "", "", "", ""] : [m.name, m.role, m.state, m.timeline, m.lag_bytes])));
    if (c.galera) cluster.append(table(`Galera (writer: ${c.galera.writer || "none"})`,
      ["node", "role", "state", "cluster", "size"],
      c.galera.nodes.map((n) => n.error ? [n.name, "down", n.error, "", ""] :
        [n.name, n.name === c.galera.writer ? "writer" : "standby writer", n.state, n.cluster_status, n.cluster_size])));
    if (c.rabbitmq) {
      cluster.append(table("RabbitMQ nodes", ["node", "in the cluster"],
        c.rabbitmq.nodes.map((n) => [n.name, n.running ? "running" : "NOT running"])));
      cluster.append(table("RabbitMQ quorum queues", ["queue", "leader", "members online"],
        c.rabbitmq.quorum_queues.map((q) => [q.name, q.leader || "NONE",
          `${q.online.length} of ${q.members.length}`])));
    }
    if (c.etcd) cluster.append(table("etcd", ["member", "healthy", "leader"],
      c.etcd.map((m) => [m.name, m.healthy ? "yes" : "NO", m.leader ? "leader" : ""])));
    if (c.haproxy) cluster.append(table("HAProxy backends", ["proxy", "server", "status"],
      c.haproxy.map((b) => b.error ? [b.error, "", ""] : [b.proxy, b.server, b.status])));
    const problems = c.problems || [];
    cluster.append(el("p", { class: problems.length ? "error" : "ok" },
      problems.length ? `Problems: ${problems.join("; ")}` : "Cluster healthy"));
  }

  // The lag chart: one polyline per link over the samples (inline SVG; each series has its own dash
  // pattern and its latest value in words, so colour is not the only signal).
  async function refreshLag() {
    const r = await api(own, "GET", "/api/ops/lag");
    if (r.status !== 200) { $("lag-note").textContent = `Lag unavailable: ${errorText(r)}`; return; }
    const samples = r.body.samples;
    $("lag-note").textContent = `Sampled every ${r.body.interval_seconds} s while this console is open; ${samples.length} sample(s).`;
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.lag)))];
    const W = 760, H = 220, L = 48, B = 28, T = 10, R = 10;
    const NS = "http://www.w3.org/2000/svg";
    const svgEl = (tag, attrs) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "lag", role: "img", id: "lag-svg",
                               "aria-label": "Lag per link over the last minutes" });
    const max = Math.max(1, ...samples.flatMap((s) => Object.values(s.lag).filter((v) => typeof v === "number")));
    const t0 = samples.length ? Date.parse(samples[0].at) : Date.now();
    const t1 = samples.length ? Math.max(t0 + 1000, Date.parse(samples[samples.length - 1].at)) : t0 + 1000;
    const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
    const y = (v) => H - B - (H - B - T) * v / max;
    svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
               svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    for (const [v, label] of [[0, "0"], [max, String(max)]]) {
      const t = svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }); t.textContent = label; svg.append(t);
    }
    const span = svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end" });
    span.textContent = samples.length ? `${Math.round((t1 - t0) / 1000)} s to ${new Date(t1).toLocaleTimeString()}` : "no samples yet";
    svg.append(span);
    const legend = el("ul", { class: "legend" });
    names.forEach((name, i) => {
      const points = samples.filter((s) => typeof s.lag[name] === "number").map((s) => `${x(Date.parse(s.at)).toFixed(1)},${y(s.lag[name]).toFixed(1)}`);
      const line = svgEl("polyline", { points: points.join(" "), class: `s${i % 4}`, "data-link": name });
      const title = svgEl("title", {}); title.textContent = name; line.append(title);
      svg.append(line);
      const last = samples.length ? samples[samples.length - 1].lag[name] : null;
      legend.append(el("li", {}, el("span", { class: `swatch s${i % 4}`, "aria-hidden": "true" }),
                       `${name}: ${last === null || last === undefined ? "unknown" : last}`));
    });
    $("lag-chart").replaceChildren(svg, legend);
  }

  async function refreshDeadLetters() {
    const r = await api(own, "GET", "/api/ops/dead-letters");
    const table = $("dead");
    if (r.status !== 200) { $("dead-status").textContent = `Dead letters unavailable: ${errorText(r)}`; return; }
    $("dead-status").textContent = r.body.count ? `${r.body.count} dead letter(s)` + (r.body.shown < r.body.count ? `, the first ${r.body.shown} shown` : "")
                                                : "No dead letters";
    table.classList.toggle("hidden", !r.body.count);
    table.tBodies[0].replaceChildren(...r.body.dead_letters.map((d) => el("tr", { "data-id": d.id },
      el("td", {}, el("code", {}, d.id)), el("td", {}, d.type || "—"), el("td", {}, d.reason || "—"),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "secondary", onclick: () => inspect(d.id), "aria-label": `Inspect ${d.id}` }, "Inspect"),
        el("button", { type: "button", onclick: () => act(d.id, "requeue"), "aria-label": `Requeue ${d.id}` }, "Requeue"),
        el("button", { type: "button", class: "secondary", onclick: () => act(d.id, "discard"), "aria-label": `Discard ${d.id}` }, "Discard")))));
  }

  async function inspect(id) {
    const r = await api(own, "GET", `/api/ops/dead-letters/${encodeURIComponent(id)}`);
    const box = $("dead-detail");
    box.classList.remove("hidden");
    box.replaceChildren(el("h3", {}, `Dead letter ${id}`), r.status === 200
      ? el("pre", { class: "output", tabindex: "0" }, JSON.stringify({ headers: r.body.headers, body: r.body.body }, null, 2))
      : el("p", { class: "error" }, errorText(r)));
  }

  async function act(id, action) {
    const r = await api(own, "POST", `/api/ops/dead-letters/${encodeURIComponent(id)}/${action}`);
    $("dead-status").textContent = r.status === 200 ? `${id}: ${r.body.outcome}` : `${id}: ${errorText(r)}`;
    $("dead-detail").classList.add("hidden");
    if (r.status === 200) await refreshDeadLetters();
    $("dead-status").textContent = (r.status === 200 ? `${id} ${r.body.outcome}. ` : `${id}: ${errorText(r)}. `) + $("dead-status").textContent;
  }

  async function refreshDrills() {
    const r = await api(own, "GET", "/api/ops/drills");
    if (r.status !== 200) return;
    const select = $("drill-name");
    if (!select.options.length) select.append(...r.body.drills.map((d) => el("option", { value: d }, d)));
    $("drills").replaceChildren(...(r.body.recent.length ? r.body.recent.map((d) => el("li", {},
      el("button", { type: "button", class: "secondary", onclick: () => showDrill(d.id) }, `${d.name}`),
      ` ${new Date(d.started_at).toLocaleString()} — ${d.state === "running" ? "running" : drillOutcome(d.exit_code)}`))
      : [el("li", { class: "muted" }, "No drills yet")]));
  }
  const drillOutcome = (code) => ({ 0: "passed", 1: "anomaly found", 2: "refused" })[code] ?? (code === null || code === undefined ? "finished" : `exit ${code}`);

  async function showDrill(id) {
    const r = await api(own, "GET", `/api/ops/drills/${encodeURIComponent(id)}`);
    const box = $("drill-report");
    box.classList.remove("hidden");
    box.textContent = r.status === 200 ? (r.body.output || "") + (r.body.report ? "\n" + JSON.stringify(r.body.report, null, 2) : "")
                                       : errorText(r);
  }

  async function runDrill(ev) {
    ev.preventDefault();
    const name = $("drill-name").value;
    const out = $("drill-output"), status = $("drill-status"), button = $("drill-run");
    out.textContent = ""; out.classList.remove("hidden");
    status.textContent = `Starting ${name}…`; button.disabled = true;
    try {
      const s = session.get();
      const r = await fetch(`/api/ops/drills/${encodeURIComponent(name)}/run`, {
        method: "POST", headers: { Authorization: `Bearer ${s ? s.token : ""}`, Accept: "text/event-stream" },
        credentials: "omit", cache: "no-store" });
      if (r.status !== 200) {
        let body = null; try { body = await r.json(); } catch (e) { /* not JSON */ }
        status.textContent = `Not started: ${errorText({ status: r.status, body })}`;
        return;
      }
      status.textContent = `${name} running; its output follows.`;
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const event = (chunk.match(/^event: (.*)$/m) || [])[1];
          const data = JSON.parse((chunk.match(/^data: (.*)$/m) || [, "null"])[1]);
          if (event === "line") out.textContent += data.text + "\n";
          if (event === "done") status.textContent = `${name} finished: ${drillOutcome(data.exit_code)} (exit code ${data.exit_code})`;
        }
      }
    } catch (e) {
      status.textContent = `The stream broke (${e}); the drill goes on: see Recent drills.`;
    } finally {
      button.disabled = false;
      refreshDrills();
    }
  }

  function start(s) {
    timers.forEach(clearInterval); timers = [];
    const ok = s && s.role === "operator";
    $("console").classList.toggle("hidden", !ok);
    $("access").textContent = !s ? "Log in with an operator account (ticketflow users create --role operator)."
                                 : ok ? "" : `Signed in as a ${s.role}: the console needs the operator role.`;
    if (!ok) return;
    refreshStatus(); refreshLag(); refreshDeadLetters(); refreshDrills();
    timers.push(setInterval(refreshLag, 5000), setInterval(refreshStatus, 15000), setInterval(refreshDeadLetters, 15000));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh").addEventListener("click", refreshStatus);
    $("drill-form").addEventListener("submit", runDrill);
    TF.loginBox($("login"), billing, start);
    start(session.get());
  });
})();
