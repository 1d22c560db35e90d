// Small SVG charts drawn by hand: stacked columns, grouped bars and a line, with axes and
// <title> tooltips. Every label is a text node.

import { h, s } from './dom.js';

const W = 640;
const H = 220;
const PAD = { l: 56, r: 12, t: 12, b: 34 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function frame(max, yfmt, labels, title) {
  const g = [];
  const ih = H - PAD.t - PAD.b;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + ih - (ih * i) / 4;
    g.push(s('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    g.push(s('text', { x: PAD.l - 6, y: y + 3, 'text-anchor': 'end' }, yfmt((max * i) / 4)));
  }
  const iw = W - PAD.l - PAD.r;
  const step = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((l, i) => {
    if (i % step !== 0) return;
    const x = PAD.l + (iw * (i + 0.5)) / labels.length;
    g.push(s('text', { x, y: H - PAD.b + 14, 'text-anchor': 'middle' }, l));
  });
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title },
    s('title', {}, title), g);
}

function legend(series) {
  return h('div', { class: 'legend' }, series.map((se) => h('span', {}, h('i', { class: se.cls }), se.name)));
}

/** Stacked columns: one per label, one segment per series. */
export function stacked({ title, labels, series, yfmt = String }) {
  const totals = labels.map((_, i) => series.reduce((a, se) => a + (se.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const svg = frame(max, yfmt, labels, title);
  const ih = H - PAD.t - PAD.b;
  const bw = (W - PAD.l - PAD.r) / Math.max(1, labels.length);
  labels.forEach((l, i) => {
    let y = PAD.t + ih;
    for (const se of series) {
      const v = se.values[i] || 0;
      if (v <= 0) continue;
      const hgt = (ih * v) / max;
      y -= hgt;
      svg.appendChild(s('rect', { class: se.cls, x: PAD.l + i * bw + bw * 0.15, y, width: bw * 0.7, height: hgt },
        s('title', {}, `${l}: ${yfmt(v)} ${se.name}`)));
    }
  });
  return h('div', {}, svg, legend(series));
}

/** Grouped bars: per label, one bar per series side by side. */
export function grouped({ title, labels, series, yfmt = String }) {
  const max = niceMax(Math.max(0, ...series.flatMap((se) => se.values.filter(Number.isFinite))));
  const svg = frame(max, yfmt, labels, title);
  const ih = H - PAD.t - PAD.b;
  const bw = (W - PAD.l - PAD.r) / Math.max(1, labels.length);
  const inner = (bw * 0.7) / Math.max(1, series.length);
  labels.forEach((l, i) => {
    series.forEach((se, j) => {
      const v = se.values[i];
      if (!Number.isFinite(v) || v <= 0) return;
      const hgt = (ih * v) / max;
      svg.appendChild(s('rect', { class: se.cls, x: PAD.l + i * bw + bw * 0.15 + j * inner, y: PAD.t + ih - hgt, width: inner * 0.9, height: hgt },
        s('title', {}, `${l} ${se.name}: ${yfmt(v)}`)));
    });
  });
  return h('div', {}, svg, legend(series));
}

/** A line with a dot per point. */
export function line({ title, labels, values, yfmt = String }) {
  const max = niceMax(Math.max(0, ...values));
  const svg = frame(max, yfmt, labels, title);
  const ih = H - PAD.t - PAD.b;
  const iw = W - PAD.l - PAD.r;
  const pts = values.map((v, i) => [PAD.l + (iw * (i + 0.5)) / Math.max(1, labels.length), PAD.t + ih - (ih * v) / max]);
  if (pts.length > 0) {
    svg.appendChild(s('polyline', { class: 'line', points: pts.map((p) => p.join(',')).join(' ') }));
  }
  pts.forEach((p, i) => svg.appendChild(s('circle', { class: 'dot', cx: p[0], cy: p[1], r: 2.5 },
    s('title', {}, `${labels[i]}: ${yfmt(values[i])}`))));
  return h('div', {}, svg);
}
