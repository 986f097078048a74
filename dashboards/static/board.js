// The line board: one tile per machine in flow order, coloured by state, with the current stop's reason
// and duration, today's OEE; live through server-sent events (no page polling).
"use strict";

Andon.start(async () => {
  const line = await Andon.lineSelector();
  const names = await Andon.reasons();
  const tiles = document.getElementById("tiles");
  tiles.innerHTML = line.machines.map((m, i) => {
    const buf = m.buffer_after && i < line.machines.length - 1
      ? `<div class="buffer"><div class="arrow">➜</div>buffer ${m.buffer_after.capacity}</div>`
      : (i < line.machines.length - 1 ? `<div class="buffer"><div class="arrow">➜</div></div>` : "");
    return `<div class="tile" id="tile-${Andon.esc(m.id)}" data-machine="${Andon.esc(m.id)}" data-state="offline">
        <h2>${Andon.esc(m.name || m.id)}</h2><div class="mid">${Andon.esc(m.id)}</div>
        <div class="state">–</div><div class="since"></div><div class="reason"></div>
        <div class="factors"></div></div>${buf}`;
  }).join("");

  const since = {};
  function showStates(states) {
    for (const s of states) {
      const tile = document.getElementById(`tile-${s.machine}`);
      if (!tile) continue;
      tile.dataset.state = s.state;
      tile.querySelector(".state").textContent = Andon.STATE_LABELS[s.state] || s.state;
      const stopped = !["running", "offline"].includes(s.state);
      tile.querySelector(".reason").textContent = stopped
        ? (s.reason_code ? (names[s.reason_code] || s.reason_code)
          : (s.fault_code ? `fault ${s.fault_code}` : (s.state === "unplanned_stop" ? "reason not given" : "")))
        : "";
      since[s.machine] = s.since ? new Date(s.since) : null;
    }
    tick();
  }
  function tick() {
    const now = Date.now();
    for (const [m, t] of Object.entries(since)) {
      const el = document.querySelector(`#tile-${CSS.escape(m)} .since`);
      if (el) el.textContent = t ? `for ${Andon.duration((now - t.getTime()) / 1000)}` : "";
    }
  }
  setInterval(tick, 1000);

  function showOee(o) {
    document.getElementById("k-oee").textContent = Andon.pct(o.line.oee);
    document.getElementById("k-a").textContent = Andon.pct(o.line.availability);
    document.getElementById("k-p").textContent = Andon.pct(o.line.performance);
    document.getElementById("k-q").textContent = Andon.pct(o.line.quality);
    document.getElementById("k-good").textContent = Math.round(o.line.good_count ?? 0).toLocaleString();
    for (const [m, f] of Object.entries(o.machines)) {
      const el = document.querySelector(`#tile-${CSS.escape(m)} .factors`);
      if (el) el.textContent = `OEE ${Andon.pct(f.oee)} · A ${Andon.pct(f.availability)} · P ${Andon.pct(f.performance)} · Q ${Andon.pct(f.quality)}`;
    }
  }

  function connect() {
    const es = new EventSource(`/api/v1/lines/${encodeURIComponent(line.id)}/live?key=${encodeURIComponent(Andon.key())}`);
    es.addEventListener("states", (e) => { showStates(JSON.parse(e.data)); Andon.status(`live · ${new Date().toLocaleTimeString()}`); });
    es.addEventListener("oee", (e) => showOee(JSON.parse(e.data)));
    es.addEventListener("error", (e) => {
      if (e.data) Andon.status(JSON.parse(e.data).detail, true);
      else Andon.status("connection lost, reconnecting…", true);
    });
  }
  connect();
});
