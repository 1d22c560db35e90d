// The dashboard's entry point: the login page, the hash router (#/, #/agents/<name>,
// #/runs/<id>, …), the banner, and a collector of script errors that the browser test reads.

import { api, key, setKey, clearKey, whenUnauthorized, ApiError } from './api.js';
import { h, replace } from './dom.js';
import * as pages from './pages.js';
import { run } from './run.js';

// Every uncaught error or rejected promise, also kept for the browser test (window.__errors).
window.__errors = [];
window.addEventListener('error', (e) => {
  window.__errors.push(e.message || `failed to load ${e.target && (e.target.src || e.target.href)}`);
}, true);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason && e.reason.name === 'AbortError') return;
  window.__errors.push(String(e.reason && e.reason.message ? e.reason.message : e.reason));
});
document.addEventListener('securitypolicyviolation', (e) => {
  window.__errors.push(`Content-Security-Policy blocked ${e.blockedURI} (${e.violatedDirective})`);
});

const ROUTES = [
  [/^\/$/, 'overview', pages.overview],
  [/^\/agents$/, 'agents', pages.agents],
  [/^\/agents\/([^/]+)$/, 'agent', pages.agent],
  [/^\/runs$/, 'runs', pages.runs],
  [/^\/runs\/([^/]+)$/, 'run', run],
  [/^\/approvals$/, 'approvals', pages.approvals],
  [/^\/budgets$/, 'budgets', pages.budgets],
  [/^\/schedules$/, 'schedules', pages.schedules],
  [/^\/servers$/, 'servers', pages.servers],
  [/^\/audit$/, 'audit', pages.audit],
  [/^\/keys$/, 'keys', pages.keys],
];

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const nav = document.getElementById('nav');
const logout = document.getElementById('logout');
let current = null;

function flash(text, info = false) {
  banner.textContent = text;
  banner.className = info ? 'info' : '';
  banner.hidden = !text;
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function login(message) {
  nav.hidden = true;
  logout.hidden = true;
  main.setAttribute('data-page', 'login');
  const input = h('input', { id: 'key', type: 'password', autocomplete: 'off', placeholder: 'ak_… or the admin key', required: true });
  const error = h('p', { id: 'login-error', class: 'muted' }, message || '');
  const form = h('form', { class: 'panel login', id: 'login' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste an API key of this server. It stays in this browser tab only (sessionStorage) and is sent as Authorization: Bearer with every request.'),
    h('label', {}, 'API key', input), error,
    h('div', { class: 'toolbar' }, h('button', { type: 'submit', class: 'primary', id: 'sign-in' }, 'Sign in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const k = input.value.trim();
    if (!k) return;
    setKey(k);
    try {
      await api('/v1/runs?limit=1');
      flash('');
      const next = sessionStorage.getItem('agentkit.dashboard.next');
      sessionStorage.removeItem('agentkit.dashboard.next');
      go(next && next !== '#/login' ? next : '#/');
    } catch (err) {
      clearKey();
      error.textContent = err.message;
    }
  });
  replace(main, form);
  main.setAttribute('data-ready', 'true');
  input.focus();
}

async function render() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  flash('');
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs] = raw.split('?');
  if (!key() || path === '/login') { login(); return; }
  nav.hidden = false;
  logout.hidden = false;
  const found = ROUTES.map(([re, name, f]) => [re.exec(path), name, f]).find(([m]) => m);
  main.setAttribute('data-ready', 'false');
  if (!found) {
    main.setAttribute('data-page', 'not-found');
    replace(main, h('h1', {}, 'Not found'), h('p', {}, `The dashboard has no page ${path}.`));
    main.setAttribute('data-ready', 'true');
    return;
  }
  const [m, name, page] = found;
  for (const a of nav.querySelectorAll('a')) {
    const target = a.getAttribute('href').slice(1);
    a.classList.toggle('active', target === '/' ? path === '/' : path.startsWith(target));
  }
  main.setAttribute('data-page', name);
  document.title = `agentkit · ${name}`;
  const ctx = {
    params: m.slice(1).map(decodeURIComponent),
    query: new URLSearchParams(qs || ''),
    signal: controller.signal,
    go,
    flash,
    reload: () => render(),
  };
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await page(main, ctx);
  } catch (e) {
    if (controller.signal.aborted || (e && e.name === 'AbortError')) return;
    if (e instanceof ApiError && e.status === 401) return;
    replace(main, h('h1', {}, 'Could not load this page'), h('pre', { id: 'page-error' }, e && e.message ? e.message : String(e)));
  }
  if (!controller.signal.aborted) main.setAttribute('data-ready', 'true');
}

whenUnauthorized((err) => {
  clearKey();
  if (location.hash !== '#/login') sessionStorage.setItem('agentkit.dashboard.next', location.hash);
  login(`${err.message}. Sign in again.`);
});
logout.addEventListener('click', () => { clearKey(); go('#/login'); });
window.addEventListener('hashchange', render);
render();
