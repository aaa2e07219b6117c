// Plain SVG line charts for the programme dashboard: one value per period and series, gaps where a value is
// unknown (a period without screened women), an optional dashed limit line. No chart library: the dashboard
// needs a handful of small line charts, which a few dozen lines of SVG draw.

export interface Series {
  name: string;
  values: (number | null)[];
}

const NS = "http://www.w3.org/2000/svg";
const W = 420;
const H = 220;
const PAD = { left: 48, right: 12, top: 14, bottom: 48 };

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function text(x: number, y: number, value: string, anchor = "middle"): SVGTextElement {
  const t = svg("text", { x, y, "text-anchor": anchor });
  t.textContent = value;
  return t;
}

/** A figure with a line chart of `series` over `labels` (one point per period), values shown by `format`. */
export function lineChart(
  title: string,
  labels: string[],
  series: Series[],
  format: (v: number) => string,
  limit?: { value: number; name: string },
): HTMLElement {
  const figure = document.createElement("figure");
  figure.className = "plot";
  figure.dataset.plot = title;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const known = series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const top = Math.max(...known, limit?.value ?? 0, 1e-9) * 1.1;
  const x = (i: number) => PAD.left + (labels.length <= 1 ? (W - PAD.left - PAD.right) / 2 : (i * (W - PAD.left - PAD.right)) / (labels.length - 1));
  const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    chart.append(text(PAD.left - 4, y(v) + 4, format(v), "end"));
  }
  chart.append(svg("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "axis" }));
  chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  const every = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % every === 0) chart.append(text(x(i), H - PAD.bottom + 14, label));
  });
  if (limit) {
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(limit.value), y2: y(limit.value), class: "limit" }));
    chart.append(text(W - PAD.right, y(limit.value) - 4, limit.name, "end"));
  }
  series.forEach((s, n) => {
    let path = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      path += `${path && s.values[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      const dot = svg("circle", { cx: x(i), cy: y(v), r: 3, class: `series-${n}` });
      const tip = svg("title", {});
      tip.textContent = `${s.name} ${labels[i]}: ${format(v)}`;
      dot.append(tip);
      chart.append(dot);
    });
    chart.append(svg("path", { d: path, fill: "none", class: `series-${n}`, "stroke-width": 2 }));
    // The legends share the width, so that three series still fit.
    const lx = PAD.left + n * Math.min(160, (W - PAD.left - PAD.right) / series.length);
    chart.append(svg("line", { x1: lx, x2: lx + 16, y1: H - 12, y2: H - 12, class: `series-${n}`, "stroke-width": 3 }));
    chart.append(text(lx + 20, H - 8, s.name, "start"));
  });
  figure.append(caption, chart);
  return figure;
}
