// Downtime: the Pareto chart of stop time and the form to give reasons to stops that need one.
"use strict";

Andon.start(async () => {
  const line = await Andon.lineSelector();
  const reasons = (await Andon.api("/api/v1/reasons")).flatMap((c) => c.reasons.map((r) => ({ ...r, category: c.category })));
  const windowSel = document.getElementById("window");
  const bySel = document.getElementById("by");

  async function drawPareto() {
    const q = new URLSearchParams({ line: line.id, window: windowSel.value, by: bySel.value });
    const p = await Andon.api(`/api/v1/downtime/pareto?${q}`);
    const keys = p.rows.map((r) => r.key);
    Plotly.react("pareto", [
      { type: "bar", x: keys, y: p.rows.map((r) => r.duration_s / 60), name: "minutes", marker: { color: "#d63031" },
        customdata: p.rows.map((r) => r.count), hovertemplate: "%{x}<br>%{y:.1f} min in %{customdata} stops<extra></extra>" },
      { type: "scatter", mode: "lines+markers", x: keys, y: p.rows.map((r) => 100 * r.cumulative_share), yaxis: "y2",
        name: "cumulative %", line: { color: "#f1c40f" } },
    ], Andon.plotLayout({ showlegend: false, yaxis: { title: "minutes" },
      yaxis2: { title: "cumulative %", overlaying: "y", side: "right", range: [0, 105] } }), { displayModeBar: false, responsive: true });
    document.getElementById("pareto").dataset.keys = JSON.stringify(keys);
  }

  async function drawUnassigned() {
    const q = new URLSearchParams({ line: line.id, window: windowSel.value, unassigned: "true", limit: "50" });
    const d = await Andon.api(`/api/v1/downtime?${q}`);
    const options = `<option value="">choose…</option>` + reasons.map((r) =>
      `<option value="${Andon.esc(r.code)}">${Andon.esc(r.category)}: ${Andon.esc(r.name || r.code)}</option>`).join("");
    const tbody = document.querySelector("#unassigned tbody");
    tbody.innerHTML = d.stops.length ? d.stops.map((s) => `
      <tr data-stop="${s.stop_id}">
        <td>${Andon.esc(s.machine)}</td><td>${new Date(s.start_ts).toLocaleString()}</td>
        <td class="num">${Andon.duration(s.duration_s)}</td><td>${Andon.esc(s.fault_code || "")}</td>
        <td><select class="reason">${options}</select></td><td><input class="comment" maxlength="2000"></td>
        <td><button class="save">Save</button></td></tr>`).join("")
      : `<tr><td colspan="7" class="status">No stop is waiting for a reason.</td></tr>`;
    tbody.querySelectorAll("button.save").forEach((btn) => btn.addEventListener("click", async () => {
      const row = btn.closest("tr");
      const reason = row.querySelector(".reason").value;
      if (!reason) { Andon.status("choose a reason first", true); return; }
      const body = { reason_code: reason };
      const comment = row.querySelector(".comment").value.trim();
      if (comment) body.comment = comment;
      try {
        await Andon.api(`/api/v1/downtime/${row.dataset.stop}`, { method: "PATCH", body });
        Andon.status(`saved reason ${reason}`);
        await refresh();
      } catch (err) { Andon.status(`not saved: ${err.message}`, true); }
    }));
  }

  async function refresh() { await Promise.all([drawPareto(), drawUnassigned()]); }
  windowSel.addEventListener("change", refresh);
  bySel.addEventListener("change", drawPareto);
  await refresh();
});
