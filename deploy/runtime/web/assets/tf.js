// TicketFlow pages' shared helper (no build step, no framework): API calls with the bearer
// token, the session kept in sessionStorage, a sign-up / log-in box, a tiny DOM builder, money,
// a live stream (EventSource) with a visible connection state, and QR codes as SVG.
// A page passes its settings in <meta name="tf-..."> tags (no inline script: the CSP forbids it).
"use strict";
const TF = (() => {
  const meta = (name) => (document.querySelector(`meta[name="tf-${name}"]`) || {}).content || "";
  const KEY = "ticketflow.session";

  const session = {
    get() {
      try {
        const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
        return s && Date.parse(s.expires_at) > Date.now() ? s : null;
      } catch (e) { return null; }
    },
    set(s) { sessionStorage.setItem(KEY, JSON.stringify(s)); },
    clear() { sessionStorage.removeItem(KEY); },
  };

  // One API call: {status, body}. Errors come back as the daemons' envelope {error: {code, message}};
  // a network failure is status 0 with code NETWORK.
  async function api(base, method, path, body, opts = {}) {
    const headers = { Accept: "application/json" };
    const s = session.get();
    if (opts.auth !== false && s) headers.Authorization = `Bearer ${s.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.idempotencyKey) headers["Idempotency-Key"] = opts.idempotencyKey;
    try {
      const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                           credentials: "omit", cache: "no-store" });
      const text = await r.text();
      let parsed = null;
      try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { error: { code: "NOT_JSON", message: text } }; }
      if (r.status === 401 && s) session.clear();
      return { status: r.status, body: parsed };
    } catch (e) {
      return { status: 0, body: { error: { code: "NETWORK", message: "the server could not be reached" } } };
    }
  }
  const errorText = (reply) => (reply.body && reply.body.error ? `${reply.body.error.message} (${reply.body.error.code})`
                                                                : `HTTP ${reply.status}`);

  // el("button", {class: "x", onclick: f, "aria-label": "..."}, "text", child...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const money = (minor, currency) =>
    new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 100);
  const when = (iso) => new Date(iso).toLocaleString();
  const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());

  // The sign-up / log-in box (billing's POST /api/users and POST /api/sessions, cross-origin with CORS).
  function loginBox(container, billing, onChange) {
    const draw = () => {
      container.replaceChildren();
      const s = session.get();
      if (s) {
        container.append(el("span", { "data-testid": "signed-in" }, `Signed in as ${s.email}`), " ",
          el("button", { class: "secondary", type: "button", onclick: async () => {
            await api(billing, "DELETE", "/api/sessions/current");
            session.clear(); draw(); onChange && onChange(null);
          } }, "Log out"));
        return;
      }
      const status = el("p", { class: "error", role: "alert" });
      const field = (id, label, type, extra = {}) => [el("label", { for: id }, label),
        el("input", { id, name: id, type, required: true, ...extra })];
      const login = el("form", { class: "inline", "aria-label": "Log in" },
        el("div", {}, field("tf-email", "E-mail", "email", { autocomplete: "username" })),
        el("div", {}, field("tf-password", "Password", "password", { autocomplete: "current-password", minlength: 10 })),
        el("div", { class: "signup-only hidden" }, field("tf-name", "Name", "text", { autocomplete: "name", required: false })),
        el("button", { type: "submit", id: "tf-login" }, "Log in"),
        el("button", { type: "button", class: "secondary", id: "tf-signup" }, "Sign up"));
      const signupBtn = login.querySelector("#tf-signup");
      let signingUp = false;
      signupBtn.addEventListener("click", () => {
        if (!signingUp) {  // first click shows the name field; the second signs up
          signingUp = true;
          login.querySelector(".signup-only").classList.remove("hidden");
          login.querySelector("#tf-name").required = true;
          login.querySelector("#tf-login").textContent = "Create account";
          signupBtn.classList.add("hidden");
          login.querySelector("#tf-name").focus();
        }
      });
      login.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        status.textContent = "";
        const email = login.querySelector("#tf-email").value.trim();
        const password = login.querySelector("#tf-password").value;
        if (signingUp) {
          const made = await api(billing, "POST", "/api/users",
                                 { email, password, name: login.querySelector("#tf-name").value.trim() },
                                 { auth: false, idempotencyKey: newKey() });
          if (made.status !== 201) { status.textContent = errorText(made); return; }
        }
        const r = await api(billing, "POST", "/api/sessions", { email, password }, { auth: false });
        if (r.status !== 201) { status.textContent = errorText(r); return; }
        session.set({ ...r.body, email });
        draw(); onChange && onChange(session.get());
      });
      container.append(login, status);
    };
    draw();
  }

  // A live stream: EventSource reconnects by itself and sends Last-Event-ID, so the server
  // resumes where the page left off. ``indicator`` shows the state in words, not colour only.
  function stream(url, handlers, indicator) {
    const source = new EventSource(url);
    const show = (state, text) => { if (indicator) { indicator.dataset.state = state; indicator.textContent = text; } };
    show("down", "Connecting to live updates…");
    source.addEventListener("open", () => show("live", "Live: seat changes appear as they happen"));
    source.addEventListener("error", () => show("down", "Live updates interrupted; reconnecting…"));
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => fn(JSON.parse(ev.data || "null"), ev));
    }
    return source;
  }

  // A QR code as an SVG element (vendored qrcode-generator; the code never leaves the page).
  function qr(text, label) {
    const q = qrcode(0, "M");
    q.addData(text); q.make();
    const n = q.getModuleCount(), NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `-4 -4 ${n + 8} ${n + 8}`);
    svg.setAttribute("width", "180"); svg.setAttribute("height", "180");
    svg.setAttribute("role", "img"); svg.setAttribute("aria-label", label);
    svg.setAttribute("class", "qr");
    const bg = document.createElementNS(NS, "rect");
    for (const [k, v] of Object.entries({ x: -4, y: -4, width: n + 8, height: n + 8, fill: "#fff" })) bg.setAttribute(k, v);
    svg.append(bg);
    let d = "";
    for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (q.isDark(r, c)) d += `M${c} ${r}h1v1h-1z`;
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", d); path.setAttribute("fill", "#000");
    svg.append(path);
    return svg;
  }

  return { meta, session, api, errorText, el, money, when, newKey, loginBox, stream, qr };
})();
