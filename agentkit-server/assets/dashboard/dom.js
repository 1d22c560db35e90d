// DOM helpers. Every piece of server data becomes a text node or an attribute value set with
// setAttribute: nothing is parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'value' && 'value' in el) el.value = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** An HTML element: `h('td', {class: 'num'}, 'text', child)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Remove every child of `el` and add `children`. */
export function replace(el, ...children) {
  while (el.firstChild) el.removeChild(el.firstChild);
  append(el, children);
  return el;
}

/** A status pill. */
export function pill(status) {
  return h('span', { class: `status ${String(status).replace(/[^a-z_]/g, '')}` }, String(status));
}

/** A table: `columns` are header names (a leading '#' right-aligns), `rows` arrays of cells. */
export function table(columns, rows, rowAttrs) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => c.startsWith('#')
      ? h('th', { class: 'num' }, c.slice(1)) : h('th', {}, c)))),
    h('tbody', {}, rows.length === 0
      ? h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'Nothing here yet.'))
      : rows.map((r, i) => h('tr', rowAttrs ? rowAttrs(i) : {}, r.map((cell, j) =>
        columns[j].startsWith('#') ? h('td', { class: 'num' }, cell) : h('td', {}, cell))))));
}

/** Pretty JSON, cut after `max` characters. */
export function json(v, max = 4000) {
  let t;
  try { t = JSON.stringify(v, null, 2); } catch { t = String(v); }
  if (t === undefined) t = 'null';
  return t.length > max ? `${t.slice(0, max)}\n… (${t.length - max} more characters)` : t;
}

export const fmt = {
  time(ms) {
    if (ms === null || ms === undefined) return '—';
    const d = new Date(ms);
    return Number.isNaN(d.getTime()) ? '—' : d.toLocaleString();
  },
  dur(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  },
  usd(x) {
    if (!Number.isFinite(x)) return '—';
    return x < 0.01 && x > 0 ? `$${x.toFixed(5)}` : `$${x.toFixed(2)}`;
  },
  num(n) { return Number.isFinite(n) ? n.toLocaleString() : '—'; },
  pct(x) { return Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '—'; },
};

/** The q-th quantile (0..1) of numbers, or NaN for none. */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const v = [...values].sort((a, b) => a - b);
  const i = Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1));
  return v[i];
}

/** Tokens of a usage object. */
export function tokens(u) {
  if (!u || typeof u !== 'object') return 0;
  return (u.input_tokens || 0) + (u.output_tokens || 0) + (u.cache_read_tokens || 0) + (u.cache_write_tokens || 0);
}
