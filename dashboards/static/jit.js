// JIT readiness: the verdict, the evidence, the blockers (what to fix first) and the throughput-versus-
// buffer curves of each link.
"use strict";

Andon.start(async () => {
  const line = await Andon.lineSelector();
  let r;
  try {
    r = await Andon.api(`/api/v1/lines/${encodeURIComponent(line.id)}/jit-readiness`);
  } catch (err) {
    document.getElementById("verdict").textContent = "not available";
    document.getElementById("summary").textContent = err.status === 404 ? "JIT readiness is not available for this line yet." : err.message;
    return;
  }
  const v = document.getElementById("verdict");
  v.textContent = r.verdict.replace("_", " ");
  v.className = "verdict " + r.verdict;
  document.getElementById("summary").textContent = r.summary || "";
  const traces = (r.curves || []).map((c) => ({ type: "scatter", mode: "lines+markers", name: c.link,
    x: c.points.map((p) => p.buffer), y: c.points.map((p) => 100 * p.throughput_fraction),
    error_y: { type: "data", symmetric: false, array: c.points.map((p) => 100 * (p.ci_high - p.throughput_fraction)),
               arrayminus: c.points.map((p) => 100 * (p.throughput_fraction - p.ci_low)) } }));
  if (r.target) traces.push({ type: "scatter", mode: "lines", name: "target", x: [0, Math.max(...traces.flatMap((t) => t.x), 1)],
    y: [100 * r.target, 100 * r.target], line: { dash: "dash", color: "#f1c40f" } });
  Plotly.react("curves", traces, Andon.plotLayout({ xaxis: { title: "buffer size (units)" },
    yaxis: { title: "throughput, % of demand" }, margin: { l: 60, r: 20, t: 20, b: 50 } }), { displayModeBar: false, responsive: true });
  document.querySelector("#blockers tbody").innerHTML = (r.blockers || []).map((b) => `<tr>
    <td>${Andon.esc(b.machine)}</td><td>${Andon.esc(b.text || b.improvement)}</td>
    <td class="num">${b.buffer_freed ?? "–"}</td><td class="num">${Andon.pct(b.share)}</td></tr>`).join("");
  document.querySelector("#evidence tbody").innerHTML = Object.entries(r.evidence_summary || {}).map(([k, val]) =>
    `<tr><th>${Andon.esc(k)}</th><td>${Andon.esc(val)}</td></tr>`).join("");
  document.querySelector("#recommendation tbody").innerHTML = (r.recommendation?.links || []).map((l) => `<tr>
    <td>${Andon.esc(l.after)}</td><td class="num">${l.current ?? "–"}</td><td class="num">${l.recommended}</td></tr>`).join("");
});
