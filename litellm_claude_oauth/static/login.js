// Claude OAuth login page: plain DOM + fetch against the admin-only JSON API.
// The admin key lives in this tab's sessionStorage and only ever travels in the
// Authorization header. Server data is written with textContent, never as HTML.
"use strict";

(() => {
  const KEY = "claudeOAuth.adminKey";
  const PENDING = "claudeOAuth.pendingLogin";
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;

  // ---- helpers ------------------------------------------------------------------

  function showMessage(text, kind = "info") {
    const box = $("message");
    box.replaceChildren();
    if (!text) {
      box.hidden = true;
      return;
    }
    if (text instanceof Node) box.append(text);
    else box.textContent = text;
    box.className = `message ${kind}`;
    box.hidden = false;
  }

  function detailText(detail, status) {
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc, msg}, ...]
      return detail.map((d) => (d && d.msg ? d.msg.replace(/^Value error, /, "") : String(d))).join("; ");
    }
    if (detail) return JSON.stringify(detail);
    return `request failed (HTTP ${status})`;
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = store.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      // Relative to the page (…/oauth/ui), so "status" is …/oauth/status, under any root path.
      response = await fetch(path, init);
    } catch (err) {
      throw new Error(`could not reach the proxy: ${err.message}`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      /* not JSON */
    }
    if (!response.ok) {
      const err = new Error(detailText(data && (data.detail ?? data.error?.message ?? data.error), response.status));
      err.status = response.status;
      throw err;
    }
    return data;
  }

  function account() {
    return $("account").value.trim() || "default";
  }

  function q(name) {
    return `?account=${encodeURIComponent(name)}`;
  }

  // Disable the buttons while a request runs, report its error, never throw.
  async function busy(task) {
    const buttons = document.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    document.body.classList.add("busy");
    try {
      return await task();
    } catch (err) {
      let text = err.message;
      if (err.status === 401 || err.status === 403) {
        text += store.getItem(KEY) ? "" : " (enter the admin key above)";
        $("admin-key").focus();
      }
      showMessage(`Error: ${text}`, "error");
      return undefined;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      document.body.classList.remove("busy");
    }
  }

  function duration(seconds) {
    const s = Math.floor(Math.abs(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m} min`;
    return `${s} s`;
  }

  function label(s) {
    if (s.error) return ["Error", "bad"];
    if (!s.logged_in) return ["Not logged in", "none"];
    if (s.relogin_reason) return ["Re-login required", "bad"];
    if (s.valid) return ["Valid", "ok"];
    return ["Expired", "warn"];
  }

  function expires(s) {
    if (!s.logged_in || s.expires_in_seconds == null) return "—";
    const rel = s.expires_in_seconds >= 0 ? `in ${duration(s.expires_in_seconds)}` : `${duration(s.expires_in_seconds)} ago`;
    return s.refreshable && s.expires_in_seconds < 0 ? `${rel} (refreshable)` : rel;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  // ---- quotas -------------------------------------------------------------------

  // 5h and 7d first, then model-scoped windows (7d_opus …), then the overage lane.
  function windowLabel(w) {
    if (w.name === "overage") return "extra usage";
    return w.model_family ? `${w.name.split("_")[0]} ${w.model_family}` : w.name;
  }

  function quotaWindow(w) {
    const box = document.createElement("div");
    box.className = "quota-window";
    box.dataset.window = w.name;
    const name = document.createElement("span");
    name.className = "q-name";
    name.textContent = windowLabel(w);
    const meter = document.createElement("meter");
    // Native meter: green below 75 %, amber to 90 %, red above; no inline style needed under the CSP.
    Object.assign(meter, { min: 0, max: 1, low: 0.75, high: 0.9, optimum: 0, value: w.utilization ?? 0 });
    const pct = document.createElement("span");
    pct.className = "q-pct";
    pct.textContent = w.utilization == null ? "—" : `${Math.round(w.utilization * 100)}%`;
    const note = document.createElement("span");
    note.className = "q-reset";
    const parts = [];
    if (w.status && w.status !== "allowed") parts.push(w.status.replace(/_/g, " "));
    if (w.rolled_over) parts.push("reset since last seen");
    else if (w.reset != null) parts.push(`resets in ${duration(w.reset - Date.now() / 1000)}`);
    note.textContent = parts.join(" · ");
    // The overage lane is "rejected" on every account without extra usage: not an alarm.
    if (w.name !== "overage" && (w.status === "rejected" || (w.utilization ?? 0) >= 0.9)) box.classList.add("high");
    box.append(name, meter, pct, note);
    return box;
  }

  function notices(s) {
    const now = Date.now() / 1000;
    const out = [...(s.warnings || [])];
    if (s.cooldown_until && s.cooldown_until > now) {
      out.push(`Cooling down: ${s.cooldown_reason || "rate limited"}, back in ${duration(s.cooldown_until - now)}.`);
    }
    for (const [family, until] of Object.entries(s.model_cooldowns || {})) {
      if (until > now) out.push(`${family} models cooling down, back in ${duration(until - now)}.`);
    }
    return out;
  }

  // A second row under the account: its quota bars and anything it needs attention for.
  function detailRow(s) {
    const windows = (s.quota && s.quota.windows) || [];
    const lines = notices(s);
    if (!windows.length && !lines.length) return null;
    const tr = document.createElement("tr");
    tr.className = "detail-row";
    tr.dataset.detailFor = s.account;
    const td = document.createElement("td");
    td.colSpan = 4;
    if (windows.length) {
      const quota = document.createElement("div");
      quota.className = "quota";
      quota.append(...windows.map(quotaWindow));
      td.append(quota);
    }
    for (const line of lines) {
      const note = document.createElement("div");
      note.className = "notice";
      note.textContent = line;
      td.append(note);
    }
    tr.append(td);
    return tr;
  }

  // ---- status -------------------------------------------------------------------

  function renderStatus(accounts) {
    const body = $("status-body");
    const list = $("account-list");
    body.replaceChildren();
    list.replaceChildren();
    for (const s of accounts) {
      const [text, kind] = label(s);
      const tr = document.createElement("tr");
      tr.dataset.account = s.account;
      tr.title = "Select this account";
      tr.append(cell(s.account, "mono"), cell(s.account_email || "—"));
      const badgeCell = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = `badge ${kind}`;
      badge.textContent = text;
      badgeCell.append(badge);
      const why = s.relogin_reason || s.error;
      if (why) {
        const small = document.createElement("div");
        small.className = "why";
        small.textContent = why;
        badgeCell.append(small);
      }
      tr.append(badgeCell, cell(expires(s)));
      const detail = detailRow(s);
      if (detail) tr.classList.add("has-detail");
      for (const row of detail ? [tr, detail] : [tr]) {
        row.addEventListener("click", () => {
          $("account").value = s.account;
        });
        body.append(row);
      }
      const opt = document.createElement("option");
      opt.value = s.account;
      list.append(opt);
    }
    if (!accounts.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      tr.append(cell("No accounts."));
      tr.firstChild.colSpan = 4;
      body.append(tr);
    }
  }

  async function loadStatus() {
    const data = await api("GET", "status");
    renderStatus(data.accounts || []);
    return data;
  }

  // ---- actions ------------------------------------------------------------------

  function keyChanged() {
    const has = Boolean(store.getItem(KEY));
    $("key-hint").textContent = has
      ? "A key is set for this tab (sessionStorage). “Forget” removes it."
      : "Kept in this tab only (sessionStorage) and sent as Authorization: Bearer.";
    $("admin-key").placeholder = has ? "•••••••• (key set)" : "sk-…";
    document.body.classList.toggle("has-key", has);
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("admin-key").value.trim();
    if (!value) return;
    store.setItem(KEY, value);
    $("admin-key").value = "";
    keyChanged();
    showMessage("");
    busy(async () => {
      await loadStatus();
      showMessage("Admin key accepted.", "success");
    });
  });

  $("key-forget").addEventListener("click", () => {
    store.removeItem(KEY);
    $("admin-key").value = "";
    keyChanged();
    renderStatus([]);
    showMessage("Admin key forgotten.", "info");
  });

  $("status-reload").addEventListener("click", () =>
    busy(async () => {
      await loadStatus();
      showMessage("");
    }),
  );

  $("login").addEventListener("click", () =>
    busy(async () => {
      const name = account();
      const start = await api("GET", `start${q(name)}`);
      store.setItem(PENDING, JSON.stringify({ account: start.account, state: start.state }));
      // noopener: claude.ai gets no handle on this page (window.open then returns null,
      // so a blocked popup cannot be detected: the link below is always offered).
      window.open(start.authorization_url, "_blank", "noopener,noreferrer");
      const link = document.createElement("a");
      link.href = start.authorization_url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = "open the authorization page";
      const note = document.createElement("span");
      note.append(
        `Authorize account “${start.account}” in the new tab, then paste the code below. No new tab? `,
        link,
        ".",
      );
      showMessage(note, "info");
      $("code").focus();
    }),
  );

  $("code-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(async () => {
      const text = $("code").value.trim();
      if (!text) throw new Error("paste the code first");
      const name = account();
      const body = { code: text, account: name };
      const pending = JSON.parse(store.getItem(PENDING) || "null");
      // CODE#STATE carries its own state; otherwise send the one /start gave us.
      if (!text.includes("#") && pending && pending.account === name) body.state = pending.state;
      const s = await api("POST", "exchange", body);
      store.removeItem(PENDING);
      $("code").value = "";
      await loadStatus();
      showMessage(`Logged in: account “${s.account}”${s.account_email ? ` (${s.account_email})` : ""} is ${label(s)[0]}.`, "success");
    });
  });

  $("refresh").addEventListener("click", () =>
    busy(async () => {
      const s = await api("POST", "refresh", { account: account() });
      await loadStatus();
      showMessage(`Refreshed account “${s.account}”: expires ${expires(s)}.`, "success");
    }),
  );

  $("logout").addEventListener("click", () => {
    const name = account();
    if (!window.confirm(`Log out account “${name}”? Its stored tokens are deleted.`)) return;
    busy(async () => {
      const r = await api("POST", "logout", { account: name });
      await loadStatus();
      showMessage(r.logged_out ? `Logged out account “${r.account}”.` : `Account “${r.account}” was not logged in.`, "info");
    });
  });

  // ---- start --------------------------------------------------------------------

  keyChanged();
  if (store.getItem(KEY)) busy(loadStatus);
  else $("admin-key").focus();
  document.documentElement.dataset.ready = "1";
})();
