// The authenticated API: every request sends `Authorization: Bearer <key>` (the key lives in
// this tab's sessionStorage). Run events are read with fetch() and a stream reader, since
// EventSource cannot send headers.

const STORE = 'agentkit.dashboard.key';

export function key() { return sessionStorage.getItem(STORE); }
export function setKey(k) { sessionStorage.setItem(STORE, k); }
export function clearKey() { sessionStorage.removeItem(STORE); }

/** A failed request: `status` (0 when the server could not be reached) and its problem detail. */
export class ApiError extends Error {
  constructor(message, status, problem) {
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
/** What to do when the server refuses the key (401). */
export function whenUnauthorized(f) { onUnauthorized = f; }

function headers(extra) {
  return { Authorization: `Bearer ${key() || ''}`, ...extra };
}

async function failure(res, what) {
  let problem = null;
  try { problem = await res.json(); } catch { problem = null; }
  const detail = problem && typeof problem.detail === 'string' ? problem.detail : res.statusText;
  return new ApiError(`${what} failed (${res.status}): ${detail}`, res.status, problem);
}

/**
 * Call the API: `api('/v1/runs')`, `api(path, {method: 'POST', body: {...}})`. JSON in and out;
 * `raw: true` answers the Response.
 */
export async function api(path, { method = 'GET', body, raw = false, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(`${method} ${path}: the server could not be reached (${e})`, 0, null);
  }
  if (res.status === 401) {
    const err = await failure(res, `${method} ${path}`);
    onUnauthorized(err);
    throw err;
  }
  if (!res.ok) throw await failure(res, `${method} ${path}`);
  if (raw) return res;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/**
 * An incremental parser of `text/event-stream`: `push(text)` answers the complete events
 * (`{event, id, data}`) so far.
 */
export class SseParser {
  constructor() { this.buf = ''; this.reset(); }
  reset() { this.event = ''; this.data = []; this.id = null; }
  push(text) {
    this.buf += text;
    const out = [];
    let nl;
    while ((nl = this.buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buf.slice(0, nl);
      const skip = this.buf.startsWith('\r\n', nl) ? 2 : 1;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (skip === 1 && this.buf[nl] === '\r' && nl === this.buf.length - 1) break;
      this.buf = this.buf.slice(nl + skip);
      if (line === '') {
        if (this.data.length > 0 || this.event) {
          out.push({ event: this.event || 'message', id: this.id, data: this.data.join('\n') });
        }
        this.reset();
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id') this.id = value;
    }
    return out;
  }
}

/**
 * Follow a run's events until its `end` event (or `signal` aborts): journal events, `status`,
 * live `delta` and `end`. Reconnects with `Last-Event-ID` when the stream drops.
 */
export async function followRun(runId, { signal, onEvent, after = null }) {
  let last = after;
  let failures = 0;
  for (;;) {
    if (signal && signal.aborted) return;
    const extra = { Accept: 'text/event-stream' };
    if (last !== null) extra['Last-Event-ID'] = String(last);
    let res;
    try {
      res = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events`, { headers: headers(extra), signal });
    } catch (e) {
      if (signal && signal.aborted) return;
      if (++failures > 5) throw new ApiError(`the event stream of run ${runId} could not be reached (${e})`, 0, null);
      await new Promise((r) => setTimeout(r, 500 * failures));
      continue;
    }
    if (res.status === 401) { const err = await failure(res, 'the event stream'); onUnauthorized(err); throw err; }
    if (!res.ok) throw await failure(res, `the event stream of run ${runId}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(decoder.decode(value, { stream: true }))) {
          if (ev.id !== null && ev.id !== '') last = Number(ev.id);
          let data = ev.data;
          try { data = JSON.parse(ev.data); } catch { /* plain text */ }
          failures = 0;
          onEvent({ event: ev.event, id: ev.id, data });
          if (ev.event === 'end') ended = true;
        }
        if (ended) { reader.cancel().catch(() => {}); return; }
      }
    } catch (e) {
      if (signal && signal.aborted) return;
      if (++failures > 5) throw e;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}
