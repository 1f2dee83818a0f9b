// The buyer's pages: the event list, an event's live seat map (choose, hold, countdown, pay,
// tickets), and "my orders". Reservation data from this daemon's JSON API; accounts, orders and
// payment from billing's (cross-origin: billing answers this page's origin with CORS).
"use strict";
(() => {
  const { el, api, money, session } = TF;
  const billing = TF.meta("billing");
  const here = "";
  const page = document.body.dataset.page;
  let onSession = () => {};
  TF.loginBox(document.getElementById("login"), billing, (s) => onSession(s));

  // --- the event list ------------------------------------------------------------------
  async function events() {
    const status = document.getElementById("status");
    const r = await api(here, "GET", "/api/events?limit=100");
    if (r.status !== 200) { status.textContent = TF.errorText(r); return; }
    const list = document.getElementById("events");
    status.textContent = r.body.events.length ? "" : "No events yet.";
    for (const e of r.body.events) {
      const soldOut = e.seats.available === 0;
      list.append(el("li", { class: "card", "data-testid": "event" },
        el("h3", {}, el("a", { href: `/events/${e.id}` }, e.name)),
        el("p", {}, `${e.venue} · ${TF.when(e.starts_at)}`),
        soldOut ? el("p", { class: "badge soldout" }, "Sold out")
                : el("p", {}, `${e.seats.available} of ${e.seats.total} seats available`)));
    }
  }

  // --- tickets (event page after paying, and my orders) ----------------------------------
  function ticketList(tickets) {
    return tickets.map((t) => el("li", { class: "card ticket", "data-testid": "ticket" },
      t.code ? TF.qr(t.code, `QR code of the ticket for seat ${t.seat_label}`) : null,
      el("div", {}, el("p", {}, el("strong", {}, `Seat ${t.seat_label}`), t.status === "void" ? " (void)" : ""),
        t.code ? el("p", {}, "Code: ", el("code", { "data-testid": "ticket-code" }, t.code)) : null,
        t.checked_in_at ? el("p", {}, `Checked in at ${TF.when(t.checked_in_at)}`) : null)));
  }

  // --- an event's seat map ---------------------------------------------------------------
  async function eventPage() {
    const eventId = location.pathname.split("/")[2];
    const maxSeats = Number(TF.meta("max-seats")) || 10;
    document.getElementById("max-seats").textContent = maxSeats;
    const buttons = new Map();   // seat id -> button
    const seats = new Map();     // seat id -> seat (with its live status)
    const chosen = new Set();
    let loading = true, pending = [];  // changes that arrive while the map loads are applied after it
    let hold = null, countdown = null;

    const describe = (s) => `${s.label}, ${money(s.price_minor, s.currency)}, ` +
      (chosen.has(s.id) ? "chosen" : s.status === "available" ? "available" : s.status === "held" ? "held" : "sold");
    const face = (s) => (chosen.has(s.id) ? "✓" : s.status === "held" ? "H" : s.status === "sold" ? "S" : String(s.number));
    function paint(id) {
      const s = seats.get(id), b = buttons.get(id);
      if (!s || !b) return;
      if (s.status !== "available") chosen.delete(id);
      b.dataset.status = s.status;
      b.setAttribute("aria-pressed", chosen.has(id) ? "true" : "false");
      b.setAttribute("aria-label", describe(s));
      b.title = describe(s);
      b.textContent = face(s);
      b.disabled = s.status !== "available";
    }
    function apply(change) {
      for (const c of change.seats) {
        const s = seats.get(c.id);
        if (s) { s.status = c.status; paint(c.id); }
      }
      basket();
      soldOut();
    }
    function soldOut() {
      const free = [...seats.values()].some((s) => s.status === "available");
      document.getElementById("soldout").classList.toggle("hidden", free || loading);
    }
    function basket() {
      const picked = [...chosen].map((id) => seats.get(id));
      const total = picked.reduce((n, s) => n + s.price_minor, 0);
      document.getElementById("choice").textContent = picked.length
        ? `${picked.length} seat${picked.length > 1 ? "s" : ""} chosen: ${picked.map((s) => s.label).join(", ")}; total ` +
          money(total, picked[0].currency)
        : `No seats chosen. Choose up to ${maxSeats} seats.`;
      document.getElementById("hold").disabled = picked.length === 0;
    }
    function toggle(id) {
      const err = document.getElementById("hold-error");
      err.textContent = "";
      if (chosen.has(id)) chosen.delete(id);
      else if (chosen.size >= maxSeats) { err.textContent = `At most ${maxSeats} seats per hold.`; return; }
      else chosen.add(id);
      paint(id); basket();
    }

    async function loadMap() {
      loading = true;
      const e = await api(here, "GET", `/api/events/${eventId}`);
      if (e.status !== 200) { document.getElementById("event-name").textContent = TF.errorText(e); return; }
      document.getElementById("event-name").textContent = e.body.name;
      document.title = `TicketFlow — ${e.body.name}`;
      document.getElementById("event-meta").textContent = `${e.body.venue} · ${TF.when(e.body.starts_at)}`;
      const all = [];
      let after = null;
      do {
        const r = await api(here, "GET", `/api/events/${eventId}/seats?limit=5000${after ? `&after=${after}` : ""}`);
        if (r.status !== 200) return;
        all.push(...r.body.seats);
        after = r.body.next;
      } while (after);
      seats.clear(); buttons.clear();
      const map = document.getElementById("map");
      map.replaceChildren();
      let section = null, row = null;
      for (const s of all) {
        seats.set(s.id, s);
        if (!section || section.dataset.name !== s.section) {
          section = el("section", { class: "section", "data-name": s.section, "aria-label": `Section ${s.section}` },
                       el("h3", {}, `${s.section} · ${money(s.price_minor, s.currency)}`));
          map.append(section); row = null;
        }
        if (!row || row.dataset.row !== String(s.row)) {
          row = el("div", { class: "row", role: "group", "aria-label": `${s.section} row ${s.row}`, "data-row": s.row },
                   el("span", { class: "rowlabel", "aria-hidden": "true" }, `Row ${s.row}`));
          section.append(row);
        }
        const b = el("button", { type: "button", class: "seat", "data-seat-id": s.id, onclick: () => toggle(s.id) });
        buttons.set(s.id, b);
        row.append(b);
        paint(s.id);
      }
      loading = false;
      for (const change of pending) apply(change);
      pending = [];
      basket(); soldOut();
    }

    TF.stream(`/api/events/${eventId}/seat-stream`, {
      ready: () => loadMap(),            // the map is read after the stream's position: nothing is missed
      reset: () => { pending = []; loadMap(); },
      seats: (change) => (loading ? pending.push(change) : apply(change)),
    }, document.getElementById("live"));

    // hold -> the order reaches billing -> pay (README, the purchase walkthrough)
    document.getElementById("hold").addEventListener("click", async () => {
      const err = document.getElementById("hold-error");
      err.textContent = "";
      if (!session.get()) { err.textContent = "Log in (or sign up) first to hold seats."; return; }
      const ids = [...chosen];
      const r = await api(here, "POST", "/api/reservations", { event_id: eventId, seat_ids: ids },
                          { idempotencyKey: TF.newKey() });
      if (r.status !== 201) { err.textContent = TF.errorText(r); return; }
      chosen.clear();
      for (const s of r.body.seats) { seats.get(s.id).status = "held"; paint(s.id); }
      basket();
      showHold(r.body);
    });

    function showHold(h) {
      hold = { ...h, payKey: TF.newKey() };
      document.getElementById("hold-panel").classList.remove("hidden");
      document.getElementById("hold-summary").textContent =
        `${h.seats.map((s) => s.label).join(", ")} — ${money(h.amount_minor, h.currency)}`;
      document.getElementById("pay").disabled = false;
      document.getElementById("release").disabled = false;
      clearInterval(countdown);
      const tick = () => {
        const left = Math.max(0, Math.round((Date.parse(h.expires_at) - Date.now()) / 1000));
        const c = document.getElementById("countdown");
        c.textContent = `Held for you for ${Math.floor(left / 60)} min ${String(left % 60).padStart(2, "0")} s`;
        c.classList.toggle("countdown-low", left < 60);
        if (left === 0) { clearInterval(countdown); c.textContent = "This hold has expired."; }
      };
      tick();
      countdown = setInterval(tick, 1000);
      document.getElementById("pay").focus();
    }

    document.getElementById("pay").addEventListener("click", async () => {
      const status = document.getElementById("pay-status");
      const payBtn = document.getElementById("pay");
      payBtn.disabled = true;
      document.getElementById("release").disabled = true;
      status.className = ""; status.textContent = "Waiting for your order…";
      let delay = 100;
      for (let waited = 0; ; waited += delay, delay = Math.min(1000, delay * 2)) {
        const o = await api(billing, "GET", `/api/orders/${hold.id}`);
        if (o.status === 200) break;
        if (o.status !== 404 || waited > 30000) { status.className = "error"; status.textContent = TF.errorText(o);
                                                  payBtn.disabled = false; return; }
        await new Promise((ok) => setTimeout(ok, delay));
      }
      status.textContent = "Paying…";
      const p = await api(billing, "POST", `/api/orders/${hold.id}/pay`, undefined, { idempotencyKey: hold.payKey });
      if (p.status !== 200) {
        status.className = "error"; status.textContent = TF.errorText(p);
        if (p.status === 402) hold.payKey = TF.newKey();  // declined: a new attempt needs a new key
        payBtn.disabled = false; return;
      }
      clearInterval(countdown);
      document.getElementById("countdown").textContent = "";
      status.className = "ok"; status.textContent = `Paid ${money(p.body.amount_minor, p.body.currency)}. Enjoy the show!`;
      const t = document.getElementById("tickets");
      t.classList.remove("hidden");
      document.getElementById("ticket-list").replaceChildren(...ticketList(p.body.tickets));
    });

    document.getElementById("release").addEventListener("click", async () => {
      const r = await api(here, "DELETE", `/api/reservations/${hold.id}`);
      const status = document.getElementById("pay-status");
      if (r.status !== 200) { status.className = "error"; status.textContent = TF.errorText(r); return; }
      clearInterval(countdown);
      document.getElementById("hold-panel").classList.add("hidden");
      hold = null;
    });
  }

  // --- my orders -------------------------------------------------------------------------
  async function orders() {
    const status = document.getElementById("status");
    const list = document.getElementById("orders");
    list.replaceChildren();
    const s = session.get();
    if (!s) { status.textContent = "Log in to see your orders."; return; }
    status.textContent = "Loading…";
    const r = await api(billing, "GET", `/api/users/${s.user_id}/orders`);
    if (r.status !== 200) { status.textContent = TF.errorText(r); return; }
    status.textContent = r.body.orders.length ? "" : "No orders yet.";
    for (const o of r.body.orders) {
      list.append(el("li", { class: "card", "data-testid": "order" },
        el("h3", {}, `Order ${o.id.slice(0, 8)} — ${o.status}`),
        el("p", {}, `${o.seats.map((x) => x.label || x).join(", ")} · ${money(o.amount_minor, o.currency)}`),
        o.tickets.length ? el("ul", { class: "tickets" }, ticketList(o.tickets)) : null,
        o.status === "pending" ? el("p", {}, el("a", { href: `/events/${o.event_id}` }, "Pay on the event's page")) : null));
    }
  }

  if (page === "events") events();
  if (page === "event") eventPage();
  if (page === "orders") { orders(); onSession = () => orders(); }
})();
