// Predictive-maintenance risk: machines ranked by risk, with the level, lead time and drivers in words.
"use strict";

Andon.start(async () => {
  const line = await Andon.lineSelector();
  const tbody = document.querySelector("#risks tbody");
  try {
    const risks = await Andon.api(`/api/v1/risk?line=${encodeURIComponent(line.id)}`);
    tbody.innerHTML = risks.map((r) => `<tr>
      <td>${Andon.esc(r.machine)}</td><td class="level-${Andon.esc(r.level)}">${Andon.esc(r.level)}</td>
      <td class="num">${Andon.pct(r.probability)}</td>
      <td class="num">${r.lead_time_h != null ? r.lead_time_h.toFixed(0) + " h" : "–"}</td>
      <td>${Andon.esc((r.drivers || []).join("; "))}</td></tr>`).join("");
  } catch (err) {
    tbody.innerHTML = `<tr><td colspan="5" class="status">${err.status === 404 ? "Risk scoring is not available yet." : Andon.esc(err.message)}</td></tr>`;
  }
});
