// Shared by the board's pages: the API key (from the URL fragment #key=..., then localStorage), API
// calls with the key in a header, the line selector, and small formatting helpers.
"use strict";

// The header all pages share: filled in here so the pages carry only their own content.
(() => {
  const header = document.querySelector("header[data-page]");
  const page = header.dataset.page;
  const link = (href, text) => `<a href="/${href}"${href === page ? ' class="active"' : ""}>${text}</a>`;
  header.innerHTML = `<h1>ANDON</h1>
    <nav>${link("board", "Board")}${link("downtime", "Downtime")}${link("jit", "JIT readiness")}${link("risk", "Risk")}</nav>
    <label>Line <select id="line"></select></label>
    <span class="spacer"></span>
    <span id="status" class="status"></span>`;
})();

const Andon = (() => {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    localStorage.setItem("andon.key", fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const key = () => localStorage.getItem("andon.key") || "";

  async function api(path, options = {}) {
    const headers = Object.assign({ "X-API-Key": key() }, options.headers || {});
    if (options.body && typeof options.body !== "string") {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(options.body);
    }
    const res = await fetch(path, Object.assign({}, options, { headers }));
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error((data && (data.detail || data.title)) || res.statusText);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function askForKey(message) {
    document.querySelector("main").innerHTML = `
      <form class="keyform" id="keyform">
        <h2>API key needed</h2>
        <p class="status">${message || "Paste an Andon API key (viewer or higher). Create one with <code>andon keys create --role viewer --name board</code>."}</p>
        <input id="keyinput" type="password" autocomplete="off" placeholder="andon_...">
        <button type="submit">Use this key</button>
      </form>`;
    document.getElementById("keyform").addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem("andon.key", document.getElementById("keyinput").value.trim());
      location.reload();
    });
  }

  async function lineSelector() {
    const lines = await api("/api/v1/lines");
    const sel = document.getElementById("line");
    const wanted = new URLSearchParams(location.search).get("line") || localStorage.getItem("andon.line");
    sel.innerHTML = lines.map((l) => `<option value="${l.id}">${l.name || l.id}</option>`).join("");
    if (wanted && lines.some((l) => l.id === wanted)) sel.value = wanted;
    sel.addEventListener("change", () => {
      localStorage.setItem("andon.line", sel.value);
      const u = new URL(location.href);
      u.searchParams.set("line", sel.value);
      location.href = u.toString();
    });
    localStorage.setItem("andon.line", sel.value);
    return lines.find((l) => l.id === sel.value);
  }

  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %");
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}:${String(s).padStart(2, "0")}`;
  }
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const STATE_LABELS = { running: "Running", idle: "Idle", starved: "Starved", blocked: "Blocked",
    planned_stop: "Planned stop", setup: "Setup", unplanned_stop: "Down", offline: "No data" };
  const axis = { gridcolor: "#2a3240", zerolinecolor: "#3a4456" };
  const plotLayout = (extra) => {
    const layout = Object.assign({ paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: "#e8ecf1" }, margin: { l: 50, r: 50, t: 30, b: 80 } }, extra || {});
    for (const k of ["xaxis", "yaxis", "yaxis2"]) layout[k] = Object.assign({}, axis, layout[k] || {});
    return layout;
  };
  let reasonNames = null;
  async function reasons() {
    if (!reasonNames) {
      reasonNames = {};
      for (const c of await api("/api/v1/reasons")) for (const r of c.reasons) reasonNames[r.code] = r.name || r.code;
    }
    return reasonNames;
  }

  function status(text, isError) {
    const el = document.getElementById("status");
    if (el) { el.textContent = text; el.className = "status" + (isError ? " error" : ""); }
  }

  async function start(main) {
    if (!key()) return askForKey();
    try {
      await main();
    } catch (err) {
      if (err.status === 401 || err.status === 403) askForKey(`The key was refused: ${esc(err.message)}`);
      else status(`Error: ${err.message}`, true);
    }
  }

  return { api, key, lineSelector, pct, duration, esc, STATE_LABELS, plotLayout, status, start, reasons };
})();
