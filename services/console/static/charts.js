/* Conveyor console: tiny inline-SVG line charts (no library, works offline). */
"use strict";
window.ConveyorCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  /* series: [{label, values: [numbers], color}]; returns an <svg>. */
  function line(series, opts) {
    const w = (opts && opts.width) || 320, h = (opts && opts.height) || 80, pad = 4;
    const svg = el("svg", { viewBox: `0 0 ${w} ${h + 16}`, width: w, height: h + 16, role: "img",
      class: "chart", "aria-label": (opts && opts.title) || "chart" });
    let max = 0, n = 0;
    for (const s of series) { for (const v of s.values) max = Math.max(max, v); n = Math.max(n, s.values.length, 2); }
    max = max || 1;
    svg.appendChild(el("rect", { x: 0, y: 0, width: w, height: h, class: "chart-bg" }));
    series.forEach((s, i) => {
      if (!s.values.length) return;
      if (s.values.length === 1) s = { ...s, values: [s.values[0], s.values[0]] };  // a level line
      const step = n > 1 ? (w - 2 * pad) / (n - 1) : 0;
      const points = s.values.map((v, j) => {
        const x = pad + (j + n - s.values.length) * step;
        const y = h - pad - (v / max) * (h - 2 * pad);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      svg.appendChild(el("polyline", { points: points.join(" "), fill: "none", stroke: s.color,
        "stroke-width": 2, class: "series" }));
      const label = el("text", { x: 4 + i * (w / series.length), y: h + 12, fill: s.color, class: "legend" });
      label.textContent = `${s.label}: ${fmt(s.values[s.values.length - 1])}`;
      svg.appendChild(label);
    });
    const top = el("text", { x: w - 4, y: 12, "text-anchor": "end", class: "axis" });
    top.textContent = fmt(max);
    svg.appendChild(top);
    return svg;
  }
  function fmt(v) { return Number.isInteger(v) ? String(v) : v.toFixed(2); }
  return { line };
})();
