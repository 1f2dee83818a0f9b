// The organizers' page. Seat figures come from this daemon (GET /api/events/{id}/stats: seats
// live here); money from billing (GET /api/events/{id}/sales, cross-origin with CORS: orders and
// payments live there). Both answer only the event's organizer. The sales chart is an inline SVG
// drawn here: bars are seats sold per time bucket, the line the running total.
"use strict";
(() => {
  const { el, api, money, session } = TF;
  const billing = TF.meta("billing");
  const here = "";
  const status = document.getElementById("status");
  const parts = location.pathname.split("/");  // /organizer or /organizer/events/{id}
  const eventId = parts[2] === "events" ? parts[3] : null;
  const NS = "http://www.w3.org/2000/svg";

  TF.loginBox(document.getElementById("login"), billing, () => load());

  async function listEvents() {
    document.getElementById("list").classList.remove("hidden");
    const r = await api(here, "GET", "/api/events?limit=100");
    if (r.status !== 200) { status.textContent = TF.errorText(r); return; }
    status.textContent = r.body.events.length ? "" : "No events yet.";
    document.getElementById("events").replaceChildren(...r.body.events.map((e) => el("li", { class: "card" },
      el("a", { href: `/organizer/events/${e.id}`, "data-testid": "organizer-event" }, e.name),
      ` — ${e.venue}, ${TF.when(e.starts_at)}: ${e.seats.sold} sold, ${e.seats.held} held, ` +
      `${e.seats.available} available of ${e.seats.total}`)));
  }

  const cell = (text) => el("td", {}, text);
  const duration = (s) => (s % 86400 === 0 ? `${s / 86400} day${s === 86400 ? "" : "s"}` :
    s % 3600 === 0 ? `${s / 3600} hour${s === 3600 ? "" : "s"}` : `${s / 60} minute${s === 60 ? "" : "s"}`);

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Bars: seats sold per bucket (every currency); line: seats sold so far. Empty buckets are drawn.
  function chart(overTime) {
    const width = overTime.bucket_seconds * 1000;
    const perBucket = new Map();
    for (const p of overTime.points) {
      const t = Date.parse(p.at);
      perBucket.set(t, (perBucket.get(t) || 0) + p.seats);
    }
    const box = document.getElementById("chart");
    if (!perBucket.size) { box.replaceChildren(el("p", { class: "muted" }, "No paid orders yet: nothing to draw.")); return; }
    const times = [...perBucket.keys()].sort((a, b) => a - b);
    const buckets = [];
    for (let t = times[0]; t <= times[times.length - 1]; t += width) buckets.push([t, perBucket.get(t) || 0]);
    const total = buckets.reduce((n, [, s]) => n + s, 0);
    const top = Math.max(...buckets.map(([, s]) => s), 1);
    const W = 640, H = 260, L = 44, R = 44, T = 24, B = 40;
    const plotW = W - L - R, plotH = H - T - B, step = plotW / buckets.length;
    const first = new Date(buckets[0][0]), last = new Date(buckets[buckets.length - 1][0] + width);
    const summary = `Seats sold per ${duration(overTime.bucket_seconds)}: ${total} seats from ` +
      `${first.toLocaleString()} to ${last.toLocaleString()}; at most ${top} in one interval.`;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": summary,
                              "data-testid": "sales-chart" });
    root.append(svg("title", {}, summary));
    root.append(svg("line", { class: "axis", x1: L, y1: T + plotH, x2: L + plotW, y2: T + plotH }));
    root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: T + plotH }));
    root.append(svg("line", { class: "axis", x1: L + plotW, y1: T, x2: L + plotW, y2: T + plotH }));
    root.append(svg("text", { x: L - 6, y: T + 4, "text-anchor": "end" }, String(top)));
    root.append(svg("text", { x: L - 6, y: T + plotH + 4, "text-anchor": "end" }, "0"));
    root.append(svg("text", { x: L + plotW + 6, y: T + 4 }, String(total)));
    root.append(svg("text", { x: L, y: H - 22 }, first.toLocaleTimeString()));
    root.append(svg("text", { x: L + plotW, y: H - 22, "text-anchor": "end" }, last.toLocaleTimeString()));
    root.append(svg("text", { x: L, y: 14 }, `seats per ${duration(overTime.bucket_seconds)} (bars, left scale)`));
    root.append(svg("line", { class: "legend-line", x1: W - 190, y1: 10, x2: W - 170, y2: 10 }));
    root.append(svg("text", { x: W - 165, y: 14 }, "seats so far (right scale)"));
    let running = 0, path = `M${L} ${T + plotH}`;  // the running total starts at 0 and steps up per bucket
    const barW = Math.min(Math.max(step * 0.8, 1), 48);
    buckets.forEach(([t, seats], i) => {
      const h = (seats / top) * plotH, x = L + i * step;
      const bar = svg("rect", { class: "bar", x: x + (step - barW) / 2, y: T + plotH - h, width: barW,
                                height: h, "data-seats": seats });
      bar.append(svg("title", {}, `${new Date(t).toLocaleString()}: ${seats} seats`));
      root.append(bar);
      running += seats;
      const y = T + plotH - (running / Math.max(total, 1)) * plotH;
      path += `L${x.toFixed(1)} ${y.toFixed(1)}L${(x + step).toFixed(1)} ${y.toFixed(1)}`;
    });
    root.append(svg("path", { class: "line", d: path }));
    root.append(svg("text", { x: L + plotW / 2, y: H - 6, "text-anchor": "middle" }, "time (your local time)"));
    box.replaceChildren(root);
  }

  async function report() {
    const section = document.getElementById("report");
    if (!session.get()) {
      section.classList.add("hidden");
      status.textContent = "Log in with the organizer account of this event to see its figures.";
      return;
    }
    status.textContent = "Loading figures…";
    const [stats, sales] = await Promise.all([api(here, "GET", `/api/events/${eventId}/stats`),
                                              api(billing, "GET", `/api/events/${eventId}/sales`)]);
    if (stats.status !== 200) {
      section.classList.add("hidden");
      status.textContent = stats.status === 404 ? "No such event, or it is not yours." :
        stats.status === 403 ? "Only the event's organizer may see its figures." : TF.errorText(stats);
      return;
    }
    status.textContent = "";
    section.classList.remove("hidden");
    const e = stats.body.event;
    document.getElementById("event-title").textContent = e.name;
    document.getElementById("event-when").textContent = `${e.venue} · ${TF.when(e.starts_at)}`;
    for (const k of ["sold", "held", "available", "total"]) document.getElementById(`seats-${k}`).textContent = e.seats[k];
    const money_ = sales.status === 200 ? sales.body : { revenue: [], by_section: [], orders: [],
                                                         over_time: { bucket_seconds: 60, points: [] } };
    document.getElementById("sales-note").textContent = sales.status === 200 ? "" :
      sales.status === 404 ? "No order of this event has reached billing yet." : `Billing: ${TF.errorText(sales)}`;
    const refunded = new Map(money_.orders.filter((o) => o.status === "refunded").map((o) => [o.currency, o.amount_minor]));
    const currencies = new Set([...money_.revenue.map((r) => r.currency), ...refunded.keys()]);
    document.querySelector("#revenue tbody").replaceChildren(...[...currencies].sort().map((c) => {
      const r = money_.revenue.find((x) => x.currency === c) || { orders: 0, seats: 0, amount_minor: 0 };
      return el("tr", { "data-testid": "revenue-row", "data-currency": c }, el("th", { scope: "row" }, c),
        cell(String(r.orders)), cell(String(r.seats)), el("td", { "data-testid": "revenue-amount" }, money(r.amount_minor, c)),
        cell(money(refunded.get(c) || 0, c)));
    }));
    if (!currencies.size) {
      document.querySelector("#revenue tbody").append(el("tr", {}, el("td", { colspan: "5" }, "No revenue yet")));
    }
    document.querySelector("#sections tbody").replaceChildren(...stats.body.sections.map((s) => {
      const r = money_.by_section.find((x) => x.section === s.section && x.currency === s.currency);
      return el("tr", { "data-testid": "section-row", "data-section": s.section }, el("th", { scope: "row" }, s.section),
        cell(money(s.price_minor, s.currency)), cell(String(s.sold)), cell(String(s.held)), cell(String(s.available)),
        cell(String(s.total)), el("td", { "data-testid": "section-revenue" }, money(r ? r.amount_minor : 0, s.currency)));
    }));
    chart(money_.over_time);
    document.querySelector("#chart-data tbody").replaceChildren(...money_.over_time.points.map((p) => el("tr", {},
      el("th", { scope: "row" }, new Date(p.at).toLocaleString()), cell(p.currency), cell(String(p.orders)),
      cell(String(p.seats)), cell(money(p.amount_minor, p.currency)))));
    document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function load() { return eventId ? report() : listEvents(); }
  document.getElementById("refresh").addEventListener("click", load);
  load();
})();
