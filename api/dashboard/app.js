// Paperhook dashboard: a small single-page app over the public JSON API.
// Every value from the server goes into the page through textContent or
// attributes set by h(), never through innerHTML, so extracted text and
// template names cannot inject markup.
'use strict';

const STATUSES = ['NEW', 'UNZIPPING FILE', 'UNZIP FILE SUCCESS', 'UNZIP FILE FAILED', 'PROCESSING IMAGE',
  'PROCESS IMAGE SUCCESS', 'PROCESS IMAGE FAILED', 'SUCCESS', 'FAILED'];
const TYPES = ['text', 'integer', 'number', 'money', 'date', 'boolean', 'enum'];
const KINDS = ['region', 'label', 'regex', 'table'];
let session = null;

// ---- DOM and HTTP helpers -------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text) {
  const t = h('div', {}, text);
  document.getElementById('toast').append(t);
  setTimeout(() => t.remove(), 4000);
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (session && method !== 'GET') opts.headers['x-csrf-token'] = session.csrf_token;
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.headers['content-type'] = 'application/json'; opts.body = JSON.stringify(body); }
  const res = await fetch(path, opts);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    if (res.status === 401 && path !== '/v1/session/sign-in') { session = null; location.hash = '#/login'; }
    throw new ApiError(res.status, err.code || 'error', err.message || `HTTP ${res.status}`);
  }
  return data;
}

function errorBox() { return h('p', { class: 'error', role: 'alert' }); }
function showError(box, e) { box.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e); }
function badge(s) { return h('span', { class: `badge ${s}` }, s); }
function when(t) { return t ? new Date(t).toLocaleString() : '—'; }
// replaceChildren would print null and false as text: drop them first.
function fill(el, ...children) { el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)); return el; }
// Every navigation gets a number. A page captures it before it fetches, and
// its drawing is dropped if the user has moved on meanwhile: a late answer
// (say, a job page refreshing after a redelivery) must not paint over the
// page the user went to.
let navigation = 0;
function screen() {
  const ticket = navigation;
  return (...children) => {
    if (ticket === navigation) return fill(document.getElementById('main'), ...children);
    console.debug('paperhook: dropped a page drawn after the user moved on');
    return null;
  };
}

// ---- Router ----------------------------------------------------------------

const routes = [
  [/^#\/login$/, loginPage],
  [/^#\/?$/, homePage],
  [/^#\/templates$/, templatesPage],
  [/^#\/templates\/new$/, () => templateEditor(null)],
  [/^#\/templates\/([0-9a-f-]+)$/, (m) => templateEditor(m[1])],
  [/^#\/jobs$/, jobsPage],
  [/^#\/jobs\/([0-9a-f-]+)$/, (m) => jobPage(m[1])],
  [/^#\/credits$/, creditsPage],
  [/^#\/keys$/, keysPage],
];

async function route() {
  const ticket = ++navigation;
  const show = screen();
  const hash = location.hash || '#/';
  if (!session && hash !== '#/login') {
    try { session = await api('GET', '/v1/session'); } catch (_) { location.hash = '#/login'; return; }
  }
  document.getElementById('nav').hidden = !session;
  for (const a of document.querySelectorAll('nav a')) {
    const target = a.getAttribute('href');
    a.classList.toggle('active', target === '#/' ? hash === '#/' : hash.startsWith(target));
  }
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      try { await page(m); } catch (e) { show(h('h1', {}, 'Something went wrong'), h('p', { class: 'error' }, e.message)); }
      if (ticket !== navigation) return;
      // Move focus to the new content (for keyboards and screen readers),
      // unless the page already focused one of its inputs.
      const content = document.getElementById('main');
      if (!content.contains(document.activeElement)) content.focus({ preventScroll: true });
      return;
    }
  }
  show(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Home')));
}

// ---- Sign in ----------------------------------------------------------------

function loginPage() {
  const show = screen();
  document.getElementById('nav').hidden = true;
  const key = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true, placeholder: 'ph_…' });
  const err = errorBox();
  const form = h('form', {
    class: 'card', onsubmit: async (ev) => {
      ev.preventDefault();
      if (!key.value.trim()) { err.textContent = 'Enter your API key.'; return; }
      try {
        session = await api('POST', '/v1/session/sign-in', { api_key: key.value.trim() });
        location.hash = '#/';
      } catch (e) { showError(err, e); }
    },
  }, h('label', { for: 'api-key' }, 'API key'), key, err,
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Sign in')),
  h('p', { class: 'muted' }, 'Get a key from your administrator (paperhook-api admin create-account). It is kept only as an HttpOnly session cookie.'));
  show(h('h1', {}, 'Sign in to Paperhook'), form);
  key.focus();
}

async function signOut() {
  try { await api('DELETE', '/v1/session'); } catch (_) { /* already gone */ }
  session = null;
  location.hash = '#/login';
}

// ---- Home and quick start ---------------------------------------------------------

async function homePage() {
  const show = screen();
  const [account, list] = await Promise.all([api('GET', '/v1/account'), api('GET', '/v1/templates?limit=1')]);
  const base = session.public_url || location.origin;
  const tid = list.templates.length ? list.templates[0].id : 'YOUR_TEMPLATE_ID';
  const curl = [
    `# Submit a document (multipart upload)`,
    `curl -H "x-auth: $PAPERHOOK_API_KEY" -F template_id=${tid} \\`,
    `  -F actual_image=@invoice.pdf -F 'static_values={"company_name":"Acme Corp"}' \\`,
    `  ${base}/process-job`,
    ``,
    `# Follow it`,
    `curl -H "x-auth: $PAPERHOOK_API_KEY" "${base}/job-status?job_id=JOB_ID"`,
    ``,
    `# Fetch the results (json or csv) for 24 hours`,
    `curl -H "x-auth: $PAPERHOOK_API_KEY" -H 'content-type: application/json' \\`,
    `  -d '{"job_id":"JOB_ID","result_format":"json"}' ${base}/v1/job-results`,
  ].join('\n');
  show(
    h('h1', {}, `Welcome, ${account.name}`),
    h('div', { class: 'card' }, h('strong', { id: 'credits' }, `${account.credits} credits`), h('span', { class: 'muted' }, ' · one credit per page')),
    list.templates.length ? null : h('div', { class: 'card' }, 'Start by ', h('a', { href: '#/templates/new' }, 'creating a template'), ': the fields to extract and the webhook that receives them.'),
    h('h2', {}, 'Quick start'),
    h('pre', { id: 'quickstart' }, curl),
    h('button', { class: 'secondary', type: 'button', onclick: () => navigator.clipboard.writeText(curl).then(() => toast('Copied')) }, 'Copy'),
  );
}

// ---- Templates ------------------------------------------------------------------

async function templatesPage() {
  const show = screen();
  // A page at a time, newest first; "More templates" adds the next one.
  // A template created meanwhile shifts the pages by one: rows already
  // shown are not drawn twice.
  const limit = 100; let offset = 0; const shown = new Set();
  const body = h('tbody', {});
  const err = errorBox();
  const more = h('button', { class: 'secondary', type: 'button', id: 'more-templates', hidden: true, onclick: () => next().catch((e) => showError(err, e)) }, 'More templates');
  async function next() {
    const { templates } = await api('GET', `/v1/templates?limit=${limit}&offset=${offset}`);
    offset += templates.length;
    body.append(...templates.filter((t) => !shown.has(t.id)).map((t) => {
      shown.add(t.id);
      return h('tr', {},
        h('td', {}, h('a', { href: `#/templates/${t.id}` }, t.name)),
        h('td', {}, String(t.fields.length)),
        h('td', { class: 'opt' }, t.webhook ? t.webhook.url : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'opt' }, h('code', {}, t.id)));
    }));
    more.hidden = templates.length < limit;
  }
  await next();
  show(h('div', { class: 'row' }, h('h1', {}, 'Templates'), h('div', { class: 'shrink' }, h('a', { href: '#/templates/new' }, h('button', { type: 'button' }, 'New template')))),
    shown.size ? [h('table', { id: 'templates' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Fields'), h('th', { class: 'opt' }, 'Webhook'), h('th', { class: 'opt' }, 'Id'))), body), err, h('div', { class: 'pager' }, more)]
      : h('div', { class: 'card empty' }, 'No templates yet. Create one to start extracting.'));
}

function blankField(kind) {
  const loc = { kind };
  if (kind === 'region') { loc.page = 1; loc.box = [0.1, 0.1, 0.4, 0.15]; }
  if (kind === 'label') { loc.label = ''; loc.direction = 'right'; }
  if (kind === 'regex') loc.pattern = '';
  if (kind === 'table') { loc.columns = [{ name: 'description', header: 'Description' }]; }
  return { name: '', type: 'text', required: false, locator: loc };
}

async function templateEditor(id) {
  const show = screen();
  const t = id ? await api('GET', `/v1/templates/${id}`) : { name: '', fields: [], keywords: [], languages: ['eng'], webhook: null };
  const state = { fields: JSON.parse(JSON.stringify(t.fields)), sample: null, hits: {} };
  const err = errorBox();
  const name = h('input', { id: 't-name', value: t.name, required: true, maxlength: 200 });
  const keywords = h('input', { id: 't-keywords', value: (t.keywords || []).join(', ') });
  const languages = h('input', { id: 't-languages', value: (t.languages || ['eng']).join(', ') });
  const hookUrl = h('input', { id: 't-webhook-url', type: 'url', value: t.webhook ? t.webhook.url : '', placeholder: 'https://example.com/webhook' });
  const headerRows = h('div', {});
  const fieldsBox = h('div', { id: 'fields' });
  const sampleBox = h('div', {});
  const testOut = h('div', { id: 'test-result' });

  function addHeaderRow(k = '', v = '') {
    const key = h('input', { value: k, placeholder: 'Header name', 'aria-label': 'Header name' });
    const val = h('input', { value: v, placeholder: 'Value', 'aria-label': 'Header value' });
    const row = h('div', { class: 'row' }, key, val, h('div', { class: 'shrink' }, h('button', { class: 'danger', type: 'button', onclick: () => row.remove() }, 'Remove')));
    row.pair = () => [key.value.trim(), val.value];
    headerRows.append(row);
  }
  for (const [k, v] of Object.entries((t.webhook && t.webhook.headers) || {})) addHeaderRow(k, v);

  function renderFields() {
    fieldsBox.replaceChildren(...state.fields.map((f, i) => fieldEditor(f, i)));
    if (!state.fields.length) fieldsBox.append(h('p', { class: 'muted' }, 'No fields yet: add one, or draw a box on a sample below.'));
    renderBoxes();
  }

  function fieldEditor(f, i) {
    const loc = f.locator;
    const set = (fn) => (ev) => { fn(ev.target.value, ev.target); renderBoxes(); };
    const kind = h('select', { 'aria-label': 'Locator', onchange: (ev) => { state.fields[i] = { ...blankField(ev.target.value), name: f.name, type: f.type, required: f.required }; renderFields(); } },
      KINDS.map((k) => h('option', { value: k, selected: k === loc.kind }, k)));
    const type = h('select', { 'aria-label': 'Type', onchange: set((v) => { f.type = v; }) }, TYPES.map((k) => h('option', { value: k, selected: k === f.type }, k)));
    const parts = [];
    if (loc.kind === 'region') {
      parts.push(h('label', {}, 'Page'), h('input', { value: loc.page, onchange: set((v) => { loc.page = /^\d+$/.test(v) ? Number(v) : v; }) }));
      parts.push(h('label', {}, 'Box (left, top, right, bottom; 0-1)'), h('input', { class: 'box-input', value: loc.box.map((n) => n.toFixed(3)).join(', '), onchange: set((v) => { loc.box = v.split(',').map(Number); }) }));
    } else if (loc.kind === 'label') {
      parts.push(h('label', {}, 'Label text'), h('input', { value: loc.label || '', onchange: set((v) => { loc.label = v; }) }));
      parts.push(h('label', {}, 'Value is'), h('select', { onchange: set((v) => { loc.direction = v; }) }, ['right', 'below', 'auto'].map((d) => h('option', { value: d, selected: d === loc.direction }, d))));
    } else if (loc.kind === 'regex') {
      parts.push(h('label', {}, 'Pattern (one capture group)'), h('input', { value: loc.pattern || '', onchange: set((v) => { loc.pattern = v; }) }));
      parts.push(h('label', {}, 'Occurrence'), h('select', { onchange: set((v) => { loc.occurrence = v; }) }, ['first', 'last', 'all'].map((d) => h('option', { value: d, selected: d === (loc.occurrence || 'first') }, d))));
    } else {
      parts.push(h('label', {}, 'Columns (JSON)'), h('textarea', { onchange: set((v, el) => { try { loc.columns = JSON.parse(v); el.setCustomValidity(''); } catch (_) { el.setCustomValidity('invalid JSON'); el.reportValidity(); } }) }, JSON.stringify(loc.columns, null, 1)));
      parts.push(h('label', {}, 'End pattern'), h('input', { value: loc.end || '', onchange: set((v) => { loc.end = v || undefined; }) }));
    }
    const { name: _n, type: _t, required: _r, locator: _l, ...rest } = f;
    const advanced = h('textarea', {
      class: 'field-advanced', 'aria-label': 'Post-processing (JSON)',
      onchange: (ev) => {
        try {
          const extra = ev.target.value.trim() ? JSON.parse(ev.target.value) : {};
          if (typeof extra !== 'object' || Array.isArray(extra)) throw new Error('not an object');
          for (const k of Object.keys(f)) if (!['name', 'type', 'required', 'locator'].includes(k)) delete f[k];
          Object.assign(f, extra);
          ev.target.setCustomValidity('');
        } catch (_) { ev.target.setCustomValidity('Post-processing must be a JSON object'); ev.target.reportValidity(); }
      },
    }, Object.keys(rest).length ? JSON.stringify(rest, null, 1) : '');
    const hit = state.hits[f.name];
    return h('div', { class: 'field' },
      h('div', { class: 'row' },
        h('div', {}, h('label', {}, 'Name'), h('input', { class: 'field-name', value: f.name, required: true, onchange: set((v) => { f.name = v.trim(); }) })),
        h('div', {}, h('label', {}, 'Type'), type),
        h('div', {}, h('label', {}, 'Locator'), kind),
        h('div', { class: 'shrink' }, h('label', {}, h('input', { type: 'checkbox', checked: f.required, onchange: (ev) => { f.required = ev.target.checked; } }), ' required')),
        h('div', { class: 'shrink' }, h('button', { class: 'danger', type: 'button', onclick: () => { state.fields.splice(i, 1); renderFields(); } }, 'Remove'))),
      h('div', {}, parts),
      h('details', {}, h('summary', {}, 'Post-processing (date_formats, decimal_separator, replace, default, validate, …)'),
        h('p', { class: 'muted' }, 'A JSON object of the field\'s post-processing rules; see extract/README.md.'), advanced),
      hit ? h('p', { class: 'test-value' }, 'Test value: ', h('code', {}, JSON.stringify(hit.value)), hit.confidence != null ? ` · confidence ${Math.round(hit.confidence * 100)}%` : '', hit.source ? ` · ${hit.source}` : '') : null);
  }

  // Sample document: show it and draw region boxes on it.
  function renderBoxes() {
    const frame = sampleBox.querySelector('.sample');
    if (!frame) return;
    frame.querySelectorAll('.box').forEach((b) => b.remove());
    for (const f of state.fields) {
      const hit = state.hits[f.name];
      const bb = hit && hit.bbox ? hit.bbox : (f.locator.kind === 'region' ? f.locator.box : null);
      if (!bb || bb.length !== 4) continue;
      const onPage = hit && hit.page ? hit.page : (typeof f.locator.page === 'number' ? f.locator.page : 1);
      if (onPage !== (state.page || 1)) continue;
      const b = h('div', { class: `box${hit && hit.bbox ? ' hit' : ''}` }, h('span', {}, f.name || '(unnamed)'));
      b.style.left = `${bb[0] * 100}%`; b.style.top = `${bb[1] * 100}%`;
      b.style.width = `${(bb[2] - bb[0]) * 100}%`; b.style.height = `${(bb[3] - bb[1]) * 100}%`;
      frame.append(b);
    }
  }

  function showSample(file, page = 1) {
    state.sample = file;
    state.page = page;
    const img = h('img', { alt: 'Sample document', id: 'sample-image' });
    const frame = h('div', { class: 'sample', id: 'sample' }, img);
    let start = null; let ghost = null;
    const pos = (ev) => { const r = frame.getBoundingClientRect(); return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))]; };
    frame.addEventListener('pointerdown', (ev) => { ev.preventDefault(); frame.setPointerCapture(ev.pointerId); start = pos(ev); ghost = h('div', { class: 'box' }); frame.append(ghost); });
    frame.addEventListener('pointermove', (ev) => {
      if (!start) return;
      const p = pos(ev);
      ghost.style.left = `${Math.min(start[0], p[0]) * 100}%`; ghost.style.top = `${Math.min(start[1], p[1]) * 100}%`;
      ghost.style.width = `${Math.abs(p[0] - start[0]) * 100}%`; ghost.style.height = `${Math.abs(p[1] - start[1]) * 100}%`;
    });
    frame.addEventListener('pointerup', (ev) => {
      if (!start) return;
      const p = pos(ev); const s = start; start = null; ghost.remove();
      const box = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])];
      if (box[2] - box[0] < 0.005 || box[3] - box[1] < 0.005) return;
      const fieldName = (prompt('Name of the new field') || '').trim();
      if (!fieldName) return;
      const f = blankField('region');
      f.name = fieldName; f.locator.page = state.page; f.locator.box = box.map((n) => Math.round(n * 1000) / 1000);
      state.fields.push(f);
      renderFields();
    });
    if (/^image\/(png|jpeg)$/.test(file.type)) {
      img.src = URL.createObjectURL(file);
    } else {
      const fd = new FormData(); fd.append('file', file); fd.append('page', String(page));
      fetch('/v1/preview/render', { method: 'POST', body: fd, credentials: 'same-origin', headers: { 'x-csrf-token': session.csrf_token } })
        .then(async (r) => { if (!r.ok) throw new Error((await r.json()).error.message); return r.blob(); })
        .then((b) => { img.src = URL.createObjectURL(b); })
        .catch((e) => { sampleBox.append(h('p', { class: 'error' }, `This sample cannot be shown: ${e.message}`)); });
    }
    img.addEventListener('load', renderBoxes);
    const paged = !/^image\/(png|jpeg)$/.test(file.type);
    const nav = paged ? h('div', { class: 'pager' },
      h('button', { class: 'secondary', type: 'button', disabled: page <= 1, onclick: () => showSample(file, page - 1) }, 'Previous page'),
      h('span', { id: 'sample-page' }, `Page ${page}`),
      h('button', { class: 'secondary', type: 'button', id: 'next-page', onclick: () => showSample(file, page + 1) }, 'Next page')) : null;
    fill(sampleBox, h('p', { class: 'muted' }, 'Drag on the page to add a region field.'), nav, frame);
  }

  function collect() {
    const headers = {};
    for (const row of headerRows.children) { const [k, v] = row.pair(); if (k) headers[k] = v; }
    const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
    const body = { name: name.value.trim(), fields: state.fields, keywords: list(keywords.value), languages: list(languages.value) };
    if (hookUrl.value.trim()) body.webhook = { url: hookUrl.value.trim(), headers };
    return body;
  }

  function validate(body) {
    if (!body.name) return 'The template needs a name.';
    const names = new Set();
    for (const f of body.fields) {
      if (!f.name) return 'Every field needs a name.';
      if (names.has(f.name)) return `Two fields are named "${f.name}".`;
      names.add(f.name);
    }
    if (hookUrl.value.trim() && !hookUrl.checkValidity()) return 'The webhook URL is not a valid URL.';
    return null;
  }

  async function save() {
    const body = collect();
    const problem = validate(body);
    if (problem) { err.textContent = problem; return; }
    try {
      const saved = id ? await api('PUT', `/v1/templates/${id}`, body) : await api('POST', '/v1/templates', body);
      // Re-render first: a click right after the toast must reach the new page.
      if (!id) location.hash = `#/templates/${saved.id}`; else await templateEditor(id);
      toast('Template saved');
    } catch (e) { showError(err, e); }
  }

  async function test() {
    testOut.replaceChildren();
    if (!state.sample) { err.textContent = 'Upload a sample document first.'; return; }
    const body = collect();
    const problem = validate(body);
    if (problem) { err.textContent = problem; return; }
    const fd = new FormData();
    fd.append('template', JSON.stringify({ fields: body.fields, keywords: body.keywords, languages: body.languages }));
    fd.append('file', state.sample);
    try {
      const out = await api('POST', '/v1/preview/extract', fd);
      state.hits = {};
      for (const [k, v] of Object.entries(out.result)) state.hits[k] = { value: v, ...(out.fields[k] || {}) };
      err.textContent = '';
      renderFields();
      fill(testOut, h('h2', {}, 'Test result'),
        out.missing_required && out.missing_required.length ? h('p', { class: 'error' }, `Required fields not found: ${out.missing_required.join(', ')}`) : null,
        h('pre', { id: 'test-json' }, JSON.stringify(out.result, null, 2)));
    } catch (e) { showError(err, e); }
  }

  const webhookCard = h('div', { class: 'card' }, h('h2', {}, 'Webhook'),
    h('label', { for: 't-webhook-url' }, 'URL'), hookUrl,
    h('label', {}, 'Custom headers (values are stored encrypted and shown masked; leave a masked value as it is to keep it — if you change the URL, enter every value again)'), headerRows,
    h('div', { class: 'actions' }, h('button', { class: 'secondary', type: 'button', onclick: () => addHeaderRow() }, 'Add header')));
  if (id) {
    const secretOut = h('span', { class: 'secret', id: 'secret' }, t.signing_secret_hint);
    const testHookOut = h('pre', { id: 'test-event-result', hidden: true });
    webhookCard.append(h('label', {}, 'Signing secret (Standard Webhooks)'), secretOut,
      h('div', { class: 'actions' },
        h('button', { class: 'secondary', type: 'button', id: 'reveal-secret', onclick: async () => { const s = await api('GET', `/v1/templates/${id}/webhook-secret`); secretOut.textContent = s.secret; } }, 'Reveal'),
        h('button', { class: 'secondary', type: 'button', onclick: async () => { const s = await api('GET', `/v1/templates/${id}/webhook-secret`); await navigator.clipboard.writeText(s.secret); toast('Secret copied'); } }, 'Copy'),
        h('button', { class: 'danger', type: 'button', id: 'rotate-secret', onclick: async () => { if (!confirm('Rotate the signing secret? For 24 hours webhooks are signed with both the old and the new secret, so receivers can switch without failures.')) return; const s = await api('POST', `/v1/templates/${id}/webhook-secret/rotate`); secretOut.textContent = s.secret; toast(s.previous_secret_expires_at ? `Secret rotated; the previous one also signs until ${when(s.previous_secret_expires_at)}` : 'Secret rotated'); } }, 'Rotate'),
        h('button', { class: 'secondary', type: 'button', id: 'send-test-event', onclick: async () => {
          testHookOut.hidden = false; testHookOut.textContent = 'Sending…';
          try { const r = await api('POST', `/v1/templates/${id}/webhook-test`); testHookOut.textContent = JSON.stringify(r, null, 2); } catch (e) { testHookOut.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e); }
        } }, 'Send test event')),
      testHookOut);
  }

  const fileInput = h('input', { type: 'file', id: 'sample-file', accept: 'image/png,image/jpeg,image/tiff,application/pdf', onchange: (ev) => { if (ev.target.files[0]) showSample(ev.target.files[0]); } });
  show(
    h('h1', {}, id ? `Template: ${t.name}` : 'New template'),
    h('div', { class: 'card' },
      h('label', { for: 't-name' }, 'Name'), name,
      h('div', { class: 'row' },
        h('div', {}, h('label', { for: 't-keywords' }, 'Keywords that must appear (comma-separated)'), keywords),
        h('div', {}, h('label', { for: 't-languages' }, 'OCR languages (e.g. eng, deu)'), languages))),
    h('div', { class: 'card' }, h('h2', {}, 'Fields'), fieldsBox,
      h('div', { class: 'actions' }, KINDS.map((k) => h('button', { class: 'secondary', type: 'button', onclick: () => { state.fields.push(blankField(k)); renderFields(); } }, `Add ${k} field`)))),
    h('div', { class: 'card' }, h('h2', {}, 'Sample document'), h('label', { for: 'sample-file' }, 'Upload an image or PDF to draw boxes and test the template'), fileInput, sampleBox,
      h('div', { class: 'actions' }, h('button', { class: 'secondary', type: 'button', id: 'test-template', onclick: test }, 'Test')), testOut),
    webhookCard,
    err,
    h('div', { class: 'actions' },
      h('button', { type: 'button', id: 'save-template', onclick: save }, 'Save template'),
      id ? h('button', { class: 'danger', type: 'button', onclick: async () => { if (!confirm('Delete this template?')) return; await api('DELETE', `/v1/templates/${id}`); toast('Template deleted'); location.hash = '#/templates'; } }, 'Delete') : null),
  );
  renderFields();
}

// ---- Jobs -------------------------------------------------------------------------

async function jobsPage() {
  const show = screen();
  const params = new URLSearchParams(location.search);
  const status = h('select', { id: 'status-filter', 'aria-label': 'Status' }, h('option', { value: '' }, 'All statuses'), STATUSES.map((s) => h('option', { value: s }, s)));
  const delivery = h('select', { id: 'delivery-filter', 'aria-label': 'Webhook delivery' }, h('option', { value: '' }, 'All deliveries'),
    [['pending', 'Webhook pending'], ['failed', 'Webhook failed'], ['gone', 'Webhook gone (410)'], ['delivered', 'Webhook delivered']].map(([v, t]) => h('option', { value: v }, t)));
  const search = h('input', { id: 'job-search', placeholder: 'Find a job id', 'aria-label': 'Job id' });
  const err = errorBox();
  const body = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  // The cursors of the pages shown so far ('' is the newest): new jobs
  // arriving do not shift the older pages as offsets would.
  let pages = ['']; const limit = 25; let loads = 0;
  status.value = params.get('status') || '';
  delivery.value = params.get('delivery') || '';
  async function load() {
    // Only the latest load draws: an older one answering late (the filter
    // changed meanwhile) would show the wrong jobs under the filter.
    const mine = ++loads;
    const q = new URLSearchParams({ limit });
    if (pages[pages.length - 1]) q.set('cursor', pages[pages.length - 1]);
    if (status.value) q.set('status', status.value);
    if (delivery.value) q.set('delivery', delivery.value);
    if (search.value.trim()) q.set('job_id', search.value.trim());
    try {
      const { jobs, next_cursor: next } = await api('GET', `/v1/jobs?${q}`);
      if (mine !== loads) { console.debug('paperhook: dropped an outdated jobs list'); return; }
      err.textContent = '';
      body.replaceChildren(...jobs.map((j) => h('tr', {},
        h('td', {}, h('a', { href: `#/jobs/${j.job_id}` }, h('code', {}, j.job_id))),
        h('td', {}, badge(j.status)),
        h('td', {}, j.delivery ? badge(j.delivery) : ''),
        h('td', { class: 'opt' }, j.document_type, j.file_name ? ` · ${j.file_name}` : ''),
        h('td', { class: 'opt' }, when(j.created_at)))));
      if (!jobs.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No jobs match. Submit one with POST /process-job (see Home).')));
      body.dataset.load = String(mine);
      // Failed or refused webhooks can all be sent again (once the receiver is fixed).
      const resend = ['failed', 'gone'].includes(delivery.value)
        ? h('button', { type: 'button', id: 'redeliver-all', onclick: () => resendAll(delivery.value) }, `Send all ${delivery.value} webhooks again`)
        : null;
      pager.replaceChildren(
        resend,
        h('button', { class: 'secondary', type: 'button', disabled: pages.length === 1, onclick: () => { pages.pop(); load(); } }, 'Newer'),
        h('button', { class: 'secondary', type: 'button', disabled: !next, onclick: () => { if (pages[pages.length - 1] !== next) pages.push(next); load(); } }, 'Older'),
        h('button', { class: 'secondary', type: 'button', id: 'refresh-jobs', onclick: load }, 'Refresh'));
    } catch (e) { if (mine === loads) showError(err, e); }
  }
  async function resendAll(state) {
    if (!confirm(`Send every ${state} webhook again (same webhook-id, fresh retries)?`)) return;
    try {
      let queued = 0; let n; let calls = 0;
      // 1,000 a call: go on while calls come back full (at most 100 calls,
      // so deliveries failing again at once cannot keep it going).
      do { ({ queued: n } = await api('POST', '/v1/jobs/redeliver', { delivery: state })); queued += n; } while (n === 1000 && ++calls < 100);
      toast(queued ? `${queued} webhook(s) queued to be sent again` : `No ${state} webhooks to send again`);
      pages = ['']; load();
    } catch (e) { showError(err, e); }
  }
  status.addEventListener('change', () => { pages = ['']; load(); });
  delivery.addEventListener('change', () => { pages = ['']; load(); });
  search.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { pages = ['']; load(); } });
  show(h('h1', {}, 'Jobs'), h('div', { class: 'row' }, status, delivery, search), err,
    h('table', { id: 'jobs' }, h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Status'), h('th', {}, 'Webhook'), h('th', { class: 'opt' }, 'Document'), h('th', { class: 'opt' }, 'Submitted'))), body), pager);
  await load();
}

async function jobPage(id) {
  const show = screen();
  const j = await api('GET', `/v1/jobs/${id}`);
  const err = errorBox();
  const docs = j.documents.map((d) => h('div', { class: 'card document' },
    h('h2', {}, `Document ${d.index}`, d.file_name ? ` · ${d.file_name}` : '', ' ', badge(d.status)),
    h('p', {}, `${d.pages ?? '?'} page(s) · ${d.credits_charged} credit(s) charged`),
    d.error ? h('p', { class: 'error' }, `${d.error.code}: ${d.error.message}`) : null,
    d.result ? h('pre', { class: 'result' }, JSON.stringify(d.result, null, 2)) : null,
    d.delivery ? h('div', {},
      h('h2', {}, 'Webhook delivery ', badge(d.delivery.state)),
      h('p', { class: 'muted' }, 'webhook-id ', h('code', {}, d.delivery.webhook_id)),
      h('table', { class: 'attempts' }, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Status'), h('th', {}, 'Latency'), h('th', { class: 'opt' }, 'Response'), h('th', {}, 'Error'))),
        h('tbody', {}, d.delivery.attempts.length ? d.delivery.attempts.map((a) => h('tr', {},
          h('td', {}, when(a.attempted_at)), h('td', {}, a.status_code ?? '—'), h('td', {}, `${a.latency_ms} ms`),
          h('td', { class: 'opt' }, h('code', {}, (a.response_excerpt || '').slice(0, 300))), h('td', {}, a.error_class ? `${a.error_class}: ${a.error_message || ''}` : ''))) : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No attempts yet'))))) : null));
  show(
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    h('h1', {}, 'Job ', h('code', {}, j.job_id), ' ', badge(j.status)),
    h('div', { class: 'card' },
      h('p', {}, 'Template ', h('a', { href: `#/templates/${j.template_id}` }, h('code', {}, j.template_id))),
      h('p', {}, `${j.document_type}${j.file_name ? ` · ${j.file_name}` : ''} · submitted ${when(j.created_at)} · finished ${when(j.finished_at)} · ${j.credits_charged} credit(s)`),
      j.error ? h('p', { class: 'error' }, `${j.error.code}: ${j.error.message}`) : null,
      j.data_deleted_at ? h('p', { class: 'muted', id: 'data-deleted' }, `Data deleted on request ${when(j.data_deleted_at)}: file, results, webhook payloads, static values and file names.`) : null,
      h('label', {}, 'static_values'), h('pre', {}, JSON.stringify(j.static_values, null, 2)),
      h('div', { class: 'actions' },
        h('button', { class: 'secondary', type: 'button', onclick: () => jobPage(id) }, 'Refresh'),
        h('button', { type: 'button', id: 'redeliver', onclick: async () => { try { await api('POST', `/v1/jobs/${id}/redeliver`); toast('Redelivery queued'); jobPage(id); } catch (e) { showError(err, e); } } }, 'Redeliver'),
        j.data_deleted_at ? null : h('button', { class: 'danger', type: 'button', id: 'delete-data', onclick: async () => {
          if (!confirm('Delete this job\'s file, results, webhook payloads, static values and file names now? This cannot be undone; webhooks not yet delivered will not be sent.')) return;
          try { await api('DELETE', `/v1/jobs/${id}`); toast('Job data deleted'); jobPage(id); } catch (e) { showError(err, e); }
        } }, 'Delete data')),
      err),
    docs.length ? docs : h('div', { class: 'card empty' }, 'No documents yet: the job is waiting for a worker.'));
}

// ---- Credits and keys -------------------------------------------------------------------

async function creditsPage() {
  const show = screen();
  const [account, ledger] = await Promise.all([api('GET', '/v1/account'), api('GET', '/v1/account/ledger?limit=100')]);
  show(h('h1', {}, 'Credits'), h('div', { class: 'card' }, h('strong', {}, `${account.credits} credits left`)),
    ledger.entries.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Change'), h('th', {}, 'Balance'), h('th', {}, 'Reason'), h('th', { class: 'opt' }, 'Job'))),
      h('tbody', {}, ledger.entries.map((e) => h('tr', {}, h('td', {}, when(e.created_at)), h('td', {}, e.delta > 0 ? `+${e.delta}` : String(e.delta)), h('td', {}, String(e.balance_after)), h('td', {}, e.reason),
        h('td', { class: 'opt' }, e.job_id ? h('a', { href: `#/jobs/${e.job_id}` }, h('code', {}, e.job_id)) : '')))))
      : h('div', { class: 'card empty' }, 'No credit movements yet.'));
}

async function keysPage() {
  const show = screen();
  const { keys } = await api('GET', '/v1/api-keys');
  const err = errorBox();
  const shown = h('div', { id: 'new-key' });
  show(h('h1', {}, 'API keys'),
    h('div', { class: 'actions' }, h('button', { type: 'button', id: 'create-key', onclick: async () => {
      try {
        const k = await api('POST', '/v1/api-keys');
        await keysPage();
        document.getElementById('new-key').replaceChildren(h('div', { class: 'card' }, h('strong', {}, 'Your new key (shown only now; store it safely):'), h('p', { class: 'secret', id: 'new-key-value' }, k.api_key)));
      } catch (e) { showError(err, e); }
    } }, 'Create key')), shown, err,
    h('table', { id: 'keys' }, h('thead', {}, h('tr', {}, h('th', {}, 'Prefix'), h('th', {}, 'Created'), h('th', { class: 'opt' }, 'Last used'), h('th', {}, 'State'), h('th', {}))),
      h('tbody', {}, keys.map((k) => h('tr', {}, h('td', {}, h('code', {}, k.prefix)), h('td', {}, when(k.created_at)), h('td', { class: 'opt' }, when(k.last_used_at)),
        h('td', {}, k.revoked_at ? badge('revoked') : 'active'),
        h('td', {}, k.revoked_at ? '' : h('button', { class: 'danger', type: 'button', 'data-prefix': k.prefix, onclick: async () => {
          if (!confirm(`Revoke ${k.prefix}? Requests with it will be refused.`)) return;
          try { await api('POST', `/v1/api-keys/${k.prefix}/revoke`); toast('Key revoked'); keysPage(); } catch (e) { showError(err, e); }
        } }, 'Revoke')))))));
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signout').addEventListener('click', signOut);
  // A link to the page already shown changes no hash: load the page afresh.
  document.getElementById('nav').addEventListener('click', (ev) => {
    const a = ev.target.closest('a');
    if (a && a.getAttribute('href') === (location.hash || '#/')) route();
  });
  route();
});
