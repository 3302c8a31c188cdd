// Line charts as inline SVG: lineChart(series, {title, yLabel}) -> an element.
// series: [{name, points: [[x, y], ...]}]; x is the epoch.
"use strict";

const COLORS = ["#2f6fdf", "#e0752d", "#1d8a4e", "#8a4fd8", "#c83a3a", "#16a0a8"];

function niceTicks(lo, hi, count) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(s => s * mag).find(s => s >= raw);
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function lineChart(series, opts = {}) {
  const W = 520, H = 240, L = 48, R = 14, T = 12, B = 30;
  const all = series.flatMap(s => s.points);
  const box = document.createElement("div");
  box.className = "chart";
  if (!all.length) { box.innerHTML = '<div class="empty">no epochs yet</div>'; return box; }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const xMax = Math.max(...xs, 2), xMin = Math.min(...xs, 1);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const yMin = yt[0], yMax = yt[yt.length - 1];
  const px = x => L + (x - xMin) / (xMax - xMin) * (W - L - R);
  const py = y => T + (1 - (y - yMin) / (yMax - yMin || 1)) * (H - T - B);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart"});
  for (const y of yt) {
    root.append(svg("line", {class: "gridline", x1: L, x2: W - R, y1: py(y), y2: py(y)}));
    root.append(svg("text", {x: L - 6, y: py(y) + 4, "text-anchor": "end"}, +y.toPrecision(4)));
  }
  for (const x of niceTicks(xMin, xMax, 6).filter(x => x >= xMin && x <= xMax && Number.isInteger(x))) {
    root.append(svg("text", {x: px(x), y: H - B + 16, "text-anchor": "middle"}, x));
  }
  root.append(svg("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
  root.append(svg("text", {x: W - R, y: H - 2, "text-anchor": "end"}, "epoch"));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join("");
    root.append(svg("path", {class: "line", d, stroke: color, "data-series": s.name}));
    if (s.points.length === 1) {
      root.append(svg("circle", {cx: px(s.points[0][0]), cy: py(s.points[0][1]), r: 3, fill: color}));
    }
  });
  box.append(root);
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${COLORS[i % COLORS.length]}"></i>`;
    item.append(s.name);
    legend.append(item);
  });
  box.append(legend);
  return box;
}
