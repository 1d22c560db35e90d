// The dashboard's pages, one function each: `(main, ctx)` renders into `main`; `ctx` has the
// route's `params`, an abort `signal` for the page's requests, `go(hash)` and `flash(text)`.

import { api } from './api.js';
import { h, replace, pill, table, json, fmt, quantile, tokens } from './dom.js';
import { stacked, grouped, line } from './charts.js';

const enc = encodeURIComponent;
const DAY = 24 * 3600 * 1000;
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

/** A button that runs `action`, disabled while it works; failures go to the banner. */
function act(label, attrs, ctx, action) {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await action(); } catch (e) { ctx.flash(e.message || String(e)); } finally { b.disabled = false; }
  });
  return b;
}

function runLink(id) { return h('a', { href: `#/runs/${enc(id)}` }, id.length > 14 ? `${id.slice(0, 14)}…` : id); }

// ---- Overview ---------------------------------------------------------------------------------

const RANGES = { '1h': 3600e3, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY };

export async function overview(main, ctx) {
  const range = RANGES[ctx.query.get('range')] ? ctx.query.get('range') : '24h';
  const span = RANGES[range];
  const now = Date.now();
  const since = now - span;
  const [runs, agents] = await Promise.all([
    api(`/v1/runs?since=${since}&limit=1000`, { signal: ctx.signal }),
    api('/v1/agents', { signal: ctx.signal }),
  ]);
  // Environment of a run: the labels pointing at its version (besides `latest`), else `v<n>`.
  const envOf = new Map();
  for (const a of agents) {
    for (const [label, v] of Object.entries(a.labels || {})) {
      if (label === 'latest') continue;
      const k = `${a.name}@${v}`;
      envOf.set(k, envOf.has(k) ? `${envOf.get(k)}, ${label}` : label);
    }
  }
  const env = (r) => envOf.get(`${r.agent}@${r.version}`) || `v${r.version}`;
  const latency = (r) => Math.max(0, r.updated_at - r.created_at);
  const finished = runs.filter((r) => FINISHED.has(r.status));
  const failed = finished.filter((r) => r.status === 'failed');
  const totalTokens = runs.reduce((a, r) => a + tokens(r.usage), 0);
  const totalCost = runs.reduce((a, r) => a + (r.cost_usd || 0), 0);
  const lat = finished.map(latency);

  const buckets = 24;
  const width = span / buckets;
  const labels = [];
  const ok = new Array(buckets).fill(0);
  const bad = new Array(buckets).fill(0);
  const other = new Array(buckets).fill(0);
  const cost = new Array(buckets).fill(0);
  for (let i = 0; i < buckets; i++) {
    const t = new Date(since + i * width);
    labels.push(span <= DAY ? `${String(t.getHours()).padStart(2, '0')}:${String(t.getMinutes()).padStart(2, '0')}` : `${t.getMonth() + 1}/${t.getDate()}`);
  }
  for (const r of runs) {
    const i = Math.min(buckets - 1, Math.max(0, Math.floor((r.created_at - since) / width)));
    if (r.status === 'succeeded') ok[i]++;
    else if (r.status === 'failed' || r.status === 'cancelled') bad[i]++;
    else other[i]++;
    cost[i] += r.cost_usd || 0;
  }
  const groups = new Map();
  for (const r of runs) {
    const k = `${r.agent}\u0000${env(r)}`;
    if (!groups.has(k)) groups.set(k, { agent: r.agent, env: env(r), runs: [] });
    groups.get(k).runs.push(r);
  }
  const rows = [...groups.values()].sort((a, b) => b.runs.length - a.runs.length).map((g) => {
    const fin = g.runs.filter((r) => FINISHED.has(r.status));
    const l = fin.map(latency);
    return { ...g, fin, errors: fin.filter((r) => r.status === 'failed').length, tokens: g.runs.reduce((a, r) => a + tokens(r.usage), 0),
      cost: g.runs.reduce((a, r) => a + (r.cost_usd || 0), 0), p50: quantile(l, 0.5), p95: quantile(l, 0.95) };
  });

  const rangeSel = h('select', { id: 'range' }, Object.keys(RANGES).map((k) => h('option', { value: k, selected: k === range }, `last ${k}`)));
  rangeSel.addEventListener('change', () => ctx.go(`#/?range=${rangeSel.value}`));
  replace(main,
    h('h1', {}, 'Overview'),
    h('div', { class: 'toolbar' }, h('label', {}, 'Range', rangeSel),
      runs.length >= 1000 ? h('span', { class: 'muted' }, 'Based on the newest 1,000 runs of the range.') : null),
    h('div', { class: 'cards' },
      card('Runs', fmt.num(runs.length)), card('Error rate', fmt.pct(finished.length ? failed.length / finished.length : NaN)),
      card('Tokens', fmt.num(totalTokens)), card('Cost', fmt.usd(totalCost)),
      card('p50 latency', fmt.dur(quantile(lat, 0.5))), card('p95 latency', fmt.dur(quantile(lat, 0.95)))),
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Runs over time'),
        stacked({ title: 'Runs over time', labels, series: [
          { name: 'succeeded', cls: 's0', values: ok }, { name: 'failed or cancelled', cls: 's1', values: bad }, { name: 'in progress', cls: 's2', values: other }] })),
      h('div', { class: 'panel' }, h('h2', {}, 'Cost over time'), line({ title: 'Cost over time', labels, values: cost, yfmt: fmt.usd })),
      h('div', { class: 'panel' }, h('h2', {}, 'Latency per agent'),
        grouped({ title: 'Latency per agent and environment', labels: rows.map((r) => `${r.agent} (${r.env})`), yfmt: fmt.dur, series: [
          { name: 'p50', cls: 'p50', values: rows.map((r) => r.p50) }, { name: 'p95', cls: 'p95', values: rows.map((r) => r.p95) }] }))),
    h('h2', {}, 'Per agent and environment'),
    table(['Agent', 'Environment', '#Runs', '#Error rate', '#Tokens', '#Cost', '#p50', '#p95'], rows.map((r) => [
      h('a', { href: `#/agents/${enc(r.agent)}` }, r.agent), r.env, fmt.num(r.runs.length),
      fmt.pct(r.fin.length ? r.errors / r.fin.length : NaN), fmt.num(r.tokens), fmt.usd(r.cost), fmt.dur(r.p50), fmt.dur(r.p95)])));
}

function card(k, v) { return h('div', { class: 'card' }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k)); }

// ---- Agents -----------------------------------------------------------------------------------

export async function agents(main, ctx) {
  const list = await api('/v1/agents', { signal: ctx.signal });
  replace(main, h('h1', {}, 'Agents'),
    table(['Name', 'Kind', 'Description', '#Latest', 'Labels', 'Updated'], list.map((a) => [
      h('a', { href: `#/agents/${enc(a.name)}` }, a.name), a.kind, a.description || '', `v${a.latest}`,
      Object.entries(a.labels || {}).map(([l, v]) => h('span', { class: 'status' }, `${l} → v${v}`)), fmt.time(a.updated_at)])));
}

export async function agent(main, ctx) {
  const name = ctx.params[0];
  const base = `/v1/agents/${enc(name)}`;
  const [entry, versions] = await Promise.all([
    api(base, { signal: ctx.signal }), api(`${base}/versions?limit=1000`, { signal: ctx.signal })]);
  const labels = Object.entries(entry.labels || {});
  const reload = () => ctx.reload();

  const promoteFrom = h('select', { id: 'promote-from' }, labels.map(([l, v]) => h('option', { value: l }, `${l} (v${v})`)));
  const promoteTo = h('input', { id: 'promote-to', placeholder: 'prod', required: true, size: 10 });
  const setName = h('input', { id: 'label-name', placeholder: 'stage', size: 10 });
  const setVersion = h('select', { id: 'label-version' }, versions.map((v) => h('option', { value: v.version }, `v${v.version}`)));
  const diffFrom = h('select', { id: 'diff-from' }, versions.map((v, i) => h('option', { value: v.version, selected: i === versions.length - 2 }, `v${v.version}`)));
  const diffTo = h('select', { id: 'diff-to' }, versions.map((v, i) => h('option', { value: v.version, selected: i === versions.length - 1 }, `v${v.version}`)));
  const diffOut = h('div', { id: 'diff' });

  const showDiff = async () => {
    const d = await api(`${base}/diff?from=${enc(diffFrom.value)}&to=${enc(diffTo.value)}`, { signal: ctx.signal });
    replace(diffOut, d.changes.length === 0 ? h('p', { class: 'muted' }, `v${d.from} and v${d.to} have the same spec.`)
      : h('table', { class: 'diff' }, h('thead', {}, h('tr', {}, h('th', {}, 'Path'), h('th', {}, `v${d.from}`), h('th', {}, `v${d.to}`))),
        h('tbody', {}, d.changes.map((c) => h('tr', {}, h('td', {}, h('code', {}, c.path || '/')),
          h('td', { class: 'from' }, c.from === undefined ? '(absent)' : h('pre', {}, json(c.from))),
          h('td', { class: 'to' }, c.to === undefined ? '(absent)' : h('pre', {}, json(c.to))))))));
  };

  replace(main,
    h('h1', {}, `${entry.kind === 'workflow' ? 'Workflow' : 'Agent'} ${entry.name}`),
    h('p', { class: 'muted' }, entry.description || ''),
    h('h2', {}, 'Environments'),
    table(['Label', 'Version', 'Earlier versions', ''], labels.map(([l, v]) => [
      h('span', { class: 'label-row', 'data-label': l }, l), `v${v}`,
      ((entry.history || {})[l] || []).map((x) => `v${x}`).join(' → ') || '—',
      l === 'latest' ? '' : act('Roll back', { class: 'rollback', 'data-label': l, disabled: !((entry.history || {})[l] || []).length }, ctx, async () => {
        await api(`${base}/rollback`, { method: 'POST', body: { label: l } });
        ctx.flash(`${l} rolled back`, true); reload();
      })])),
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Promote'),
        h('div', { class: 'toolbar' }, h('label', {}, 'From label', promoteFrom), h('label', {}, 'To label', promoteTo),
          act('Promote', { id: 'promote', class: 'primary' }, ctx, async () => {
            if (!promoteTo.value.trim()) throw new Error('name the label to move, e.g. prod');
            await api(`${base}/promote`, { method: 'POST', body: { from: promoteFrom.value, to: promoteTo.value.trim() } });
            ctx.flash(`${promoteTo.value.trim()} now points at the version of ${promoteFrom.value}`, true); reload();
          }))),
      h('div', { class: 'panel' }, h('h2', {}, 'Point a label'),
        h('div', { class: 'toolbar' }, h('label', {}, 'Label', setName), h('label', {}, 'Version', setVersion),
          act('Set', { id: 'set-label' }, ctx, async () => {
            if (!setName.value.trim()) throw new Error('name the label, e.g. stage');
            await api(`${base}/labels/${enc(setName.value.trim())}`, { method: 'PUT', body: { version: Number(setVersion.value) } });
            reload();
          })))),
    h('h2', {}, 'Versions'),
    table(['Version', 'Hash', 'Deployed', 'Labels'], versions.slice().reverse().map((v) => [
      `v${v.version}`, h('code', {}, (v.hash || '').slice(0, 12)), fmt.time(v.created_at),
      labels.filter(([, x]) => x === v.version).map(([l]) => l).join(', ')])),
    h('h2', {}, 'Diff'),
    versions.length < 2 ? h('p', { class: 'muted' }, 'One version only: nothing to compare.') : h('div', {},
      h('div', { class: 'toolbar' }, h('label', {}, 'From', diffFrom), h('label', {}, 'To', diffTo),
        act('Compare', { id: 'compare' }, ctx, showDiff)), diffOut),
    h('h2', {}, 'Spec (latest)'),
    h('pre', {}, json(versions.length ? versions[versions.length - 1].spec : {}, 20000)));
  if (versions.length >= 2) await showDiff();
}

// ---- Runs -------------------------------------------------------------------------------------

const STATUSES = ['queued', 'running', 'waiting_input', 'waiting_approval', 'paused', 'succeeded', 'failed', 'cancelled'];

export async function runs(main, ctx) {
  const q = ctx.query;
  const params = new URLSearchParams();
  for (const k of ['agent', 'status']) if (q.get(k)) params.set(k, q.get(k));
  const hours = Number(q.get('hours'));
  if (hours > 0) params.set('since', String(Date.now() - hours * 3600e3));
  params.set('limit', '200');
  const [list, agentList] = await Promise.all([
    api(`/v1/runs?${params}`, { signal: ctx.signal }), api('/v1/agents', { signal: ctx.signal })]);
  const agentSel = h('select', { id: 'filter-agent' }, h('option', { value: '' }, 'any agent'),
    agentList.map((a) => h('option', { value: a.name, selected: q.get('agent') === a.name }, a.name)));
  const statusSel = h('select', { id: 'filter-status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((st) => h('option', { value: st, selected: q.get('status') === st }, st)));
  const timeSel = h('select', { id: 'filter-time' }, [['', 'any time'], ['1', 'last hour'], ['24', 'last 24 h'], ['168', 'last 7 days']]
    .map(([v, l]) => h('option', { value: v, selected: (q.get('hours') || '') === v }, l)));
  const apply = () => {
    const p = new URLSearchParams();
    if (agentSel.value) p.set('agent', agentSel.value);
    if (statusSel.value) p.set('status', statusSel.value);
    if (timeSel.value) p.set('hours', timeSel.value);
    ctx.go(`#/runs?${p}`);
  };
  for (const el of [agentSel, statusSel, timeSel]) el.addEventListener('change', apply);
  replace(main, h('h1', {}, 'Runs'),
    h('div', { class: 'toolbar' }, h('label', {}, 'Agent', agentSel), h('label', {}, 'Status', statusSel), h('label', {}, 'Created', timeSel),
      act('Refresh', {}, ctx, async () => ctx.reload())),
    table(['Run', 'Agent', 'Version', 'Status', '#Tokens', '#Cost', '#Duration', 'Created'], list.map((r) => [
      runLink(r.run_id), r.agent, `v${r.version}`, pill(r.status), fmt.num(tokens(r.usage)), fmt.usd(r.cost_usd),
      FINISHED.has(r.status) ? fmt.dur(r.updated_at - r.created_at) : '—', fmt.time(r.created_at)]),
    (i) => ({ class: 'link', 'data-run': list[i].run_id })));
  main.querySelectorAll('tr.link').forEach((tr) => tr.addEventListener('click', (e) => {
    if (e.target.closest('a')) return;
    ctx.go(`#/runs/${enc(tr.getAttribute('data-run'))}`);
  }));
}

// ---- Approvals --------------------------------------------------------------------------------

export async function approvals(main, ctx) {
  const [pending, decided] = await Promise.all([
    api('/v1/approvals?status=pending', { signal: ctx.signal }), api('/v1/approvals?status=all', { signal: ctx.signal })]);
  const items = pending.map((a) => {
    const reason = h('textarea', { class: 'reason', placeholder: 'Reason (recorded in the audit log; a rejection reason is shown to the model)' });
    const decide = (verb) => async () => {
      await api(`/v1/approvals/${enc(a.run_id)}/${enc(a.call_id)}/${verb}`, { method: 'POST', body: reason.value.trim() ? { reason: reason.value.trim() } : {} });
      ctx.flash(`${verb === 'approve' ? 'Approved' : 'Rejected'}: ${a.tool} of run ${a.run_id}`, true);
      ctx.reload();
    };
    return h('div', { class: 'panel approval', 'data-run': a.run_id },
      h('div', { class: 'toolbar' }, h('strong', {}, a.tool), pill(a.status), h('span', { class: 'muted' }, `asked ${fmt.time(a.requested_at)}`), runLink(a.run_id)),
      h('p', {}, a.reason),
      h('div', { class: 'muted' }, `Policy ${a.policy}${a.rule ? `, rule ${a.rule}` : ''} · workspace ${a.workspace}`),
      h('h2', {}, 'Tool chain that triggered it'),
      h('div', { class: 'chain' }, (a.history || []).map((t) => [h('span', {}, t), '→']), h('span', { class: 'target' }, a.tool)),
      h('h2', {}, 'Arguments (redacted)'), h('pre', {}, json(a.arguments)),
      reason,
      h('div', { class: 'toolbar' }, act('Approve', { class: 'primary approve' }, ctx, decide('approve')),
        act('Reject', { class: 'danger reject' }, ctx, decide('reject'))));
  });
  const done = decided.filter((a) => a.status !== 'pending').sort((x, y) => (y.decided_at || 0) - (x.decided_at || 0)).slice(0, 50);
  replace(main, h('h1', {}, `Approvals (${pending.length} pending)`),
    items.length ? items : h('p', { class: 'muted', id: 'no-approvals' }, 'Nothing waits for a decision.'),
    h('h2', {}, 'Decided'),
    table(['Run', 'Tool', 'Decision', 'By', 'Reason', 'When'], done.map((a) => [
      runLink(a.run_id), a.tool, pill(a.status), a.decided_by || '—', a.decision_reason || '—', fmt.time(a.decided_at)])));
}

// ---- Budgets ----------------------------------------------------------------------------------

export async function budgets(main, ctx) {
  const view = await api('/v1/budgets', { signal: ctx.signal });
  const rows = view.budgets.map((b) => [
    b.scope === 'agent' ? `agent ${b.agent}` : 'workspace',
    fmt.usd(b.spent_usd), fmt.usd(b.max_spend_usd), fmt.usd(b.remaining_usd), fmt.num(b.calls),
    h('meter', { min: '0', max: String(b.max_spend_usd), value: String(Math.min(b.spent_usd, b.max_spend_usd)) }),
    pill(b.exhausted ? 'exhausted' : 'ok'), `${b.period}: ${fmt.time(Date.parse(b.period_start))} – ${fmt.time(Date.parse(b.period_end))}`]);
  replace(main, h('h1', {}, `Budgets of ${view.workspace}`),
    rows.length
      ? table(['Budget', '#Spent', '#Budget', '#Remaining', '#Model calls', 'Used', 'State', 'Period'], rows)
      : h('p', { class: 'muted', id: 'no-budgets' }, 'No budgets are set (budgets: and limits.budget in agentkit.yaml).'));
}

// ---- Schedules --------------------------------------------------------------------------------

function trigger(t) {
  if (!t) return '—';
  if (t.kind === 'cron') return `cron ${t.cron} (${t.timezone})`;
  if (t.kind === 'every') return `every ${fmt.dur(t.every_ms)}`;
  if (t.kind === 'at') return `once at ${fmt.time(t.at_ms ?? t.at)}`;
  return json(t);
}

// Where a schedule comes from; a spec's names the agent, version and label that make it live.
function scheduleSource(sc) {
  const o = sc.owner;
  if (!o) return sc.source || '—';
  return h('span', { class: 'owner' }, 'spec of ', h('a', { href: `#/agents/${enc(o.agent)}` }, o.agent),
    ` v${o.version} (${o.label})`);
}

export async function schedules(main, ctx) {
  const list = await api('/v1/schedules', { signal: ctx.signal });
  const history = h('div', { id: 'history' });
  const showHistory = async (name) => {
    const runs = await api(`/v1/schedules/${enc(name)}/history?limit=50`, { signal: ctx.signal });
    replace(history, h('h2', {}, `Trigger history of ${name}`),
      table(['Run', 'Fire time', 'How', 'Status', 'Created'], runs.map((r) => [
        runLink(r.run.run_id), r.fire_at ? fmt.time(r.fire_at) : '—', r.manual ? 'by hand' : 'scheduled', pill(r.run.status), fmt.time(r.run.created_at)])));
  };
  replace(main, h('h1', {}, 'Schedules'),
    table(['Name', 'Target', 'Source', 'Trigger', 'Next fire', 'State', 'Last run', ''], list.map((sc) => {
      const p = `/v1/schedules/${enc(sc.name)}`;
      return [sc.name, sc.target, scheduleSource(sc), trigger(sc.trigger), sc.paused ? '—' : fmt.time(sc.next_fire_at),
        pill(sc.paused ? 'paused' : 'active'), sc.last_run ? [runLink(sc.last_run.run_id), ' ', pill(sc.last_run.status)] : '—',
        h('div', { class: 'toolbar' },
          sc.paused ? act('Resume', { class: 'resume' }, ctx, async () => { await api(`${p}/resume`, { method: 'POST' }); ctx.reload(); })
            : act('Pause', { class: 'pause' }, ctx, async () => { await api(`${p}/pause`, { method: 'POST' }); ctx.reload(); }),
          act('Trigger now', { class: 'trigger' }, ctx, async () => {
            const r = await api(`${p}/trigger`, { method: 'POST' });
            ctx.flash(`Started run ${r.run_id}`, true); await showHistory(sc.name);
          }),
          act('History', { class: 'history' }, ctx, () => showHistory(sc.name)))];
    })), history);
}

// ---- MCP servers ------------------------------------------------------------------------------

export async function servers(main, ctx) {
  const list = await api('/v1/servers', { signal: ctx.signal });
  const tools = h('div', { id: 'tools' });
  const openServer = async (name) => {
    const ts = await api(`/v1/servers/${enc(name)}/tools`, { signal: ctx.signal });
    const toolSel = h('select', { id: 'tool' }, ts.map((t) => h('option', { value: t.name }, t.name)));
    const args = h('textarea', { id: 'arguments' }, '{}');
    const out = h('div', { id: 'call-result' });
    const example = () => {
      const t = ts.find((x) => x.name === toolSel.value);
      const props = (t && t.input_schema && t.input_schema.properties) || {};
      args.value = JSON.stringify(Object.fromEntries(Object.keys(props).map((k) => [k, ''])), null, 2);
    };
    toolSel.addEventListener('change', example);
    replace(tools, h('h2', {}, `Tools of ${name}`),
      table(['Tool', 'Description', 'Arguments'], ts.map((t) => [h('code', {}, t.name), t.description || '', h('pre', {}, json(t.input_schema, 1500))])),
      h('h2', {}, 'Playground'),
      ts.length === 0 ? h('p', { class: 'muted' }, 'This server offers no tools.') : h('div', { class: 'panel' },
        h('div', { class: 'toolbar' }, h('label', {}, 'Tool', toolSel)), h('label', {}, 'Arguments (JSON object)', args),
        h('div', { class: 'toolbar' }, act('Call', { id: 'call', class: 'primary' }, ctx, async () => {
          let parsed;
          try { parsed = JSON.parse(args.value || '{}'); } catch (e) { throw new Error(`the arguments are not JSON: ${e.message}`); }
          const r = await api(`/v1/servers/${enc(name)}/call_tool`, { method: 'POST', body: { name: toolSel.value, arguments: parsed } });
          replace(out, h('div', {}, r.is_error ? pill('failed') : pill('succeeded')),
            (r.content || []).map((c) => h('pre', {}, c.type === 'text' ? c.text : json(c))),
            r.structured_content ? h('pre', {}, json(r.structured_content)) : null);
        })), out));
    if (ts.length) example();
  };
  replace(main, h('h1', {}, 'MCP servers'),
    table(['Server', 'Transport', 'Description', 'Health', ''], list.map((sv) => [
      sv.name, sv.transport, sv.description || '', pill(sv.connected ? 'connected' : 'not connected'),
      act('Tools', { class: 'open-server' }, ctx, () => openServer(sv.name))])), tools);
  if (list.length === 0) main.appendChild(h('p', { class: 'muted' }, 'No MCP servers are configured (mcp.servers in agentkit.yaml).'));
}

// ---- Audit log --------------------------------------------------------------------------------

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function audit(main, ctx) {
  const page = await api('/v1/audit?limit=10000', { signal: ctx.signal });
  const entries = page.entries.slice().reverse();
  const search = h('input', { id: 'audit-search', type: 'search', placeholder: 'tool, run, outcome, actor…', value: ctx.query.get('q') || '' });
  const body = h('div', {});
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const hits = needle ? entries.filter((e) => JSON.stringify(e.event).toLowerCase().includes(needle)) : entries;
    replace(body, h('p', { class: 'muted' }, `${hits.length} of ${entries.length} entries`),
      table(['#Seq', 'When', 'Outcome', 'Tool', 'Run', 'Policy / rule', 'Actor', 'Reason'], hits.slice(0, 500).map((e) => [
        String(e.seq), fmt.time(e.event.at_ms), pill(e.event.outcome), h('code', {}, e.event.tool),
        // A change made outside any run (outcome `changed`) names its resource instead.
        e.event.run_id ? runLink(e.event.run_id) : h('code', {}, e.event.call_id || '—'),
        `${e.event.policy}${e.event.rule ? ` / ${e.event.rule}` : ''}`, e.event.actor || e.event.key_id || '—', e.event.reason || ''])));
  };
  search.addEventListener('input', render);
  const verify = h('span', { id: 'verify' });
  replace(main, h('h1', {}, `Audit log (${page.workspace})`),
    h('div', { class: 'toolbar' }, h('label', {}, 'Search', search),
      act('Export JSON', { id: 'export-json' }, ctx, async () => download('audit.json', 'application/json', JSON.stringify(page.entries, null, 2))),
      act('Export CSV', { id: 'export-csv' }, ctx, async () => {
        const res = await api('/v1/audit?limit=10000&format=csv', { raw: true });
        download('audit.csv', 'text/csv', await res.text());
      }),
      act('Verify chain', { id: 'verify-chain' }, ctx, async () => {
        const v = await api('/v1/audit/verify');
        replace(verify, v.ok ? pill('approved') : pill('failed'), ' ', v.ok ? `${v.entries} entries verify` : v.error);
      }), verify),
    page.next_after ? h('p', { class: 'muted' }, 'Showing the first 10,000 entries.') : null, body);
  render();
}

// ---- Keys -------------------------------------------------------------------------------------

const ROLES = ['viewer', 'invoker', 'operator', 'developer', 'admin'];

export async function keys(main, ctx) {
  const list = await api('/v1/keys', { signal: ctx.signal });
  const name = h('input', { id: 'key-name', placeholder: 'ci deploys' });
  const role = h('select', { id: 'key-role' }, ROLES.map((r) => h('option', { value: r, selected: r === 'viewer' }, r)));
  const days = h('input', { id: 'key-days', type: 'number', min: 1, placeholder: 'never', size: 6 });
  const created = h('div', { id: 'created-key' });
  replace(main, h('h1', {}, 'API keys'),
    h('div', { class: 'panel' }, h('h2', {}, 'Create a key'),
      h('div', { class: 'toolbar' }, h('label', {}, 'Name', name), h('label', {}, 'Role', role), h('label', {}, 'Expires in days', days),
        act('Create', { id: 'create-key', class: 'primary' }, ctx, async () => {
          const body = { name: name.value.trim(), role: role.value };
          if (Number(days.value) > 0) body.expires_in_days = Number(days.value);
          const k = await api('/v1/keys', { method: 'POST', body });
          await ctx.reload();
          const box = main.querySelector('#created-key');
          if (box) replace(box, h('p', {}, 'The new key (shown once; it is stored hashed):'), h('div', { class: 'secret' }, k.key));
        })), created),
    table(['Id', 'Name', 'Workspace', 'Role', 'Created', 'Last used', 'Expires', 'State', ''], list.map((k) => [
      h('code', {}, k.id), k.name, `${k.org}/${k.workspace}`, k.role, fmt.time(k.created_at), fmt.time(k.last_used_at),
      k.expires_at ? fmt.time(k.expires_at) : 'never', pill(k.revoked_at ? 'revoked' : 'active'),
      k.revoked_at ? '' : act('Revoke', { class: 'danger revoke' }, ctx, async () => {
        await api(`/v1/keys/${enc(k.id)}`, { method: 'DELETE' });
        ctx.reload();
      })])));
}
