// The run detail page: the run's journal as a timeline that follows the run live (SSE read
// with fetch), the controls (pause, resume, cancel, approve or reject a waiting call) and an
// offline replay with its divergence report.

import { api, followRun } from './api.js';
import { h, replace, pill, json, fmt, tokens } from './dom.js';

const enc = encodeURIComponent;
const LIVE = new Set(['queued', 'running', 'waiting_input', 'waiting_approval', 'paused']);

function usageOf(data) {
  const r = data && data.response;
  return (r && r.usage) || (data && data.usage) || null;
}

// Tool names by call id, learnt from the model calls (a tool result's key ends with its id).
const callNames = new Map();

function toolName(ev) {
  const d = ev.data || {};
  if (d.name || d.tool) return d.name || d.tool;
  const id = String(ev.key || '').split('/').slice(-1)[0];
  return callNames.get(id) || id;
}

/** One journal event as a timeline item. */
function item(ev) {
  const d = ev.data || {};
  const meta = [h('span', {}, `#${ev.id}`), h('span', {}, fmt.time(ev.created_at))];
  if (ev.latency_ms) meta.push(h('span', {}, `latency ${fmt.dur(ev.latency_ms)}`));
  const u = usageOf(d);
  if (u) meta.push(h('span', {}, `tokens ${fmt.num(tokens(u))} (${fmt.num(u.input_tokens || 0)} in, ${fmt.num(u.output_tokens || 0)} out)`));
  if (ev.cost_usd) meta.push(h('span', {}, `cost ${fmt.usd(ev.cost_usd)}`));
  meta.push(h('code', {}, ev.key));
  let title;
  let body;
  if (ev.event === 'model') {
    const calls = d.tool_calls || [];
    for (const c of calls) if (c.id && (c.name || c.tool)) callNames.set(c.id, c.name || c.tool);
    const model = d.response && d.response.model;
    title = `Model call${model ? ` (${model})` : ''}`;
    body = [d.text ? h('div', { class: 'live-text' }, d.text) : null,
      calls.map((c) => h('div', {}, h('div', {}, 'Tool call ', h('code', {}, c.name || c.tool || '?'), c.id ? h('span', { class: 'muted' }, ` ${c.id}`) : null),
        h('pre', {}, json(c.arguments ?? c.input ?? c.args ?? {}))))];
  } else if (ev.event === 'tool_result') {
    title = String(ev.key || '').startsWith('policy/') ? `Policy decision on ${toolName(ev)}` : `Tool result ${toolName(ev)}`;
    body = h('pre', {}, json(d));
  } else {
    const k = String(ev.key || '');
    if (k.startsWith('signal/approval/')) title = `Approval decision on ${callNames.get(k.split('/').slice(-1)[0]) || k}`;
    else title = ev.event === 'step' ? `Step ${k}` : ev.event === 'signal' ? `Signal ${k}` : ev.event === 'timer' ? `Timer ${k}` : k;
    body = h('pre', {}, json(d, 2000));
  }
  return h('li', { class: `event ${ev.event}`, 'data-seq': ev.id }, h('div', { class: 'title' }, title), h('div', { class: 'meta' }, meta), body);
}

export async function run(main, ctx) {
  const id = ctx.params[0];
  const path = `/v1/runs/${enc(id)}`;
  let current = await api(path, { signal: ctx.signal });
  const header = h('div', { class: 'panel', id: 'run-header' });
  const controls = h('div', { class: 'toolbar', id: 'run-controls' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const live = h('li', { class: 'live', id: 'live', hidden: true }, h('div', { class: 'title' }, 'The model is writing…'), h('div', { class: 'live-text' }));
  const replayOut = h('div', { id: 'replay' });
  const seen = new Set();
  const reason = h('input', { id: 'control-reason', placeholder: 'reason (optional)', size: 28 });

  const control = (label, verb, attrs = {}) => {
    const b = h('button', { type: 'button', id: verb, ...attrs }, label);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        const body = reason.value.trim() ? { reason: reason.value.trim() } : undefined;
        current = await api(`${path}/${verb}`, { method: 'POST', body: ['cancel', 'approve', 'reject'].includes(verb) ? (body || {}) : undefined });
        showHeader();
        ctx.flash(`${label}: done`, true);
      } catch (e) { ctx.flash(e.message); } finally { b.disabled = false; }
    });
    return b;
  };

  const showHeader = () => {
    const r = current;
    replace(header,
      h('div', { class: 'toolbar' }, h('strong', {}, `${r.agent} v${r.version}`), h('span', { id: 'run-status', 'data-status': r.status }, pill(r.status)),
        h('span', { class: 'muted' }, `created ${fmt.time(r.created_at)}`),
        LIVE.has(r.status) ? null : h('span', { class: 'muted' }, `took ${fmt.dur(r.updated_at - r.created_at)}`)),
      h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('div', { class: 'v' }, fmt.num(tokens(r.usage))), h('div', { class: 'k' }, 'tokens')),
        h('div', { class: 'card' }, h('div', { class: 'v' }, fmt.usd(r.cost_usd)), h('div', { class: 'k' }, 'cost')),
        h('div', { class: 'card' }, h('div', { class: 'v' }, String(r.attempts)), h('div', { class: 'k' }, 'attempts')),
        h('div', { class: 'card' }, h('div', { class: 'v' }, String(seen.size)), h('div', { class: 'k' }, 'journal events'))),
      h('h2', {}, 'Input'), h('pre', {}, json(r.input)),
      r.output ? [h('h2', {}, 'Output'), h('pre', { id: 'run-output' }, r.output.text !== undefined ? String(r.output.text) : json(r.output))] : null,
      r.error ? [h('h2', {}, 'Error'), h('pre', { id: 'run-error' }, r.error)] : null);
    const st = r.status;
    // The buttons change with the status only, so they stay put under the cursor while
    // events arrive.
    if (controls.getAttribute('data-status') === st) return;
    controls.setAttribute('data-status', st);
    replace(controls, reason,
      st === 'running' || st === 'queued' || st === 'waiting_input' || st === 'waiting_approval' ? control('Pause', 'pause') : null,
      st === 'paused' ? control('Resume', 'resume') : null,
      st === 'waiting_approval' ? [control('Approve', 'approve', { class: 'primary' }), control('Reject', 'reject', { class: 'danger' })] : null,
      LIVE.has(st) ? control('Cancel', 'cancel', { class: 'danger' }) : null,
      replayButton);
  };

  const replayButton = h('button', { type: 'button', id: 'replay-run' }, 'Replay offline');
  replayButton.addEventListener('click', async () => {
    replayButton.disabled = true;
    try {
      const r = await api(`${path}/replay`, { method: 'POST' });
      replace(replayOut, h('h2', {}, 'Replay'),
        h('div', { class: 'toolbar' }, pill(r.faithful ? 'succeeded' : 'failed'),
          r.faithful ? 'Faithful: the current code used every recorded step and asked for nothing new.' : 'The current code diverges from the recording.'),
        r.divergences.length ? [h('h2', {}, 'Divergences'), h('ul', { id: 'divergences' }, r.divergences.map((d) => h('li', {}, d)))] : null,
        h('p', { class: 'muted' }, `${r.replayed.length} recorded steps replayed.`),
        r.error ? h('pre', {}, r.error) : null, r.output ? h('pre', {}, json(r.output)) : null);
    } catch (e) { ctx.flash(e.message); } finally { replayButton.disabled = false; }
  });

  replace(main, h('h1', {}, 'Run ', h('code', {}, id)), header, controls, replayOut,
    h('h2', {}, 'Timeline'), timeline, h('p', { class: 'muted', id: 'stream-state' }, ''));
  showHeader();

  const streamState = main.querySelector('#stream-state');
  // Tool calls asked for and not answered yet, shown at the end while the run is live.
  const pending = new Map();
  const settle = () => {
    if (LIVE.has(current.status)) return;
    for (const li of pending.values()) li.remove();
    pending.clear();
  };
  const add = (ev) => {
    if (seen.has(ev.id)) return;
    seen.add(ev.id);
    live.hidden = true;
    live.lastChild.textContent = '';
    const at = live.parentNode === timeline ? live : null;
    timeline.insertBefore(item(ev), at);
    const callId = String(ev.key || '').split('/').slice(-1)[0];
    if (ev.event === 'tool_result' && !String(ev.key || '').startsWith('policy/') && pending.has(callId)) {
      pending.get(callId).remove();
      pending.delete(callId);
    }
    for (const li of pending.values()) timeline.insertBefore(li, at);
    if (ev.event === 'model') {
      for (const c of (ev.data && ev.data.tool_calls) || []) {
        if (!c.id || pending.has(c.id)) continue;
        const li = h('li', { class: 'live pending', 'data-call': c.id },
          h('div', { class: 'title' }, `Tool ${c.name || c.tool || c.id} is working…`),
          h('div', { class: 'meta' }, h('span', {}, `asked ${fmt.time(ev.created_at)}`), h('code', {}, c.id)));
        pending.set(c.id, li);
        timeline.insertBefore(li, at);
      }
    }
  };
  // What is journaled so far, then the live stream from there.
  const first = await api(`${path}/events?limit=10000`, { signal: ctx.signal });
  first.forEach(add);
  timeline.appendChild(live);
  settle();
  if (!LIVE.has(current.status)) { streamState.textContent = 'The run has finished.'; showHeader(); return; }
  streamState.textContent = 'Following the run live…';
  const after = first.length ? first[first.length - 1].id : null;
  followRun(id, {
    signal: ctx.signal,
    after,
    onEvent: ({ event, id: seq, data }) => {
      if (event === 'status' || event === 'end') {
        if (data && data.run_id) { current = data; showHeader(); settle(); }
        if (event === 'end') streamState.textContent = 'The run has finished.';
      } else if (event === 'delta') {
        live.hidden = false;
        live.lastChild.textContent += data && data.text ? data.text : '';
      } else if (event === 'error') {
        ctx.flash(`the event stream reported: ${typeof data === 'string' ? data : json(data)}`);
      } else if (seq !== null) {
        add(data && data.id !== undefined ? data : { id: Number(seq), event, key: '', data, latency_ms: 0, cost_usd: 0, created_at: Date.now() });
        showHeader();
      }
    },
  }).catch((e) => { if (!ctx.signal.aborted) ctx.flash(e.message); });
}
