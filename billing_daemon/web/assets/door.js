// The door page: door staff log in, then scan or type ticket codes. Each code goes to this
// daemon's POST /api/checkin (same origin); the answer is shown large, in colour, with an icon
// and in words, and focus goes back to the field for the next scan. A USB or phone scanner is a
// keyboard: it types the code and presses Enter, which submits the form.
"use strict";
(() => {
  const { el, api, session } = TF;
  const here = "";
  const form = document.getElementById("scan");
  const field = document.getElementById("code");
  const button = document.getElementById("check");
  const result = document.getElementById("result");
  const headline = document.getElementById("headline");
  const detail = document.getElementById("detail");
  const icon = result.querySelector(".icon");
  const recent = document.getElementById("recent");
  const roleNote = document.getElementById("role-note");
  const ICONS = { idle: "…", checking: "…", admitted: "✓", already: "✕", unknown: "?", error: "!" };
  let busy = false;

  // The first scan's time, in the door's local time zone, to the second.
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
                                                                 second: "2-digit", hour12: false });

  function show(outcome, text, more = "") {
    result.dataset.outcome = outcome;
    icon.textContent = ICONS[outcome];
    headline.textContent = text;
    detail.textContent = more;
    if (outcome !== "checking" && outcome !== "idle") {
      recent.prepend(el("li", { "data-outcome": outcome }, `${clock(new Date())} — ${text}`));
      while (recent.children.length > 8) recent.lastElementChild.remove();
    }
  }

  function signedIn(s) {
    const ok = s && s.role === "door";
    roleNote.classList.toggle("hidden", !s || ok);
    roleNote.textContent = s && !ok ? `This account is a ${s.role}: checking tickets in needs a door account.` : "";
    field.disabled = button.disabled = !ok;
    if (ok) field.focus();
    else if (!s) show("idle", "Log in with a door account to scan");
  }

  async function check(code) {
    busy = true;
    show("checking", "Checking…");
    const r = await api(here, "POST", "/api/checkin", { code });
    const error = r.body && r.body.error;
    if (r.status === 200) {
      show("admitted", `Admitted — seat ${r.body.seat_label}`, "Welcome!");
    } else if (r.status === 409 && error.code === "ALREADY_CHECKED_IN") {
      const d = error.details || {};
      show("already", `Already checked in at ${clock(d.checked_in_at)}`,
           d.seat_label ? `Seat ${d.seat_label} — do not admit again` : "Do not admit again");
    } else if (r.status === 404 || (r.status === 422 && error && error.code === "VALIDATION_FAILED")) {
      show("unknown", "Unknown ticket", "No valid ticket has this code (void, refunded or misread)");
    } else if (r.status === 401) {
      show("error", "Logged out", "Log in again to keep scanning");
      TF.loginBox(document.getElementById("login"), here, signedIn);
      signedIn(null);
    } else {
      show("error", "Not checked", TF.errorText(r) + (r.status === 0 || r.status >= 500 ? " — scan again" : ""));
    }
    busy = false;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const code = field.value.trim();
    if (!code || busy) return;
    field.value = "";
    await check(code);
    field.focus();
  });

  TF.loginBox(document.getElementById("login"), here, signedIn);
  signedIn(session.get());
})();
