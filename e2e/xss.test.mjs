// Stored XSS: markup planted in everything a user or a document controls
// (template and field names, webhook URL and header values, extracted text,
// file names, static_values, the receiver's answer, error messages) is shown
// as text on every dashboard page and never runs. Runs after
// dashboard.test.mjs against the same server (scripts/e2e.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { crc32, deflateSync } from 'node:zlib';
import { launch } from './browser.mjs';

const BASE = process.env.PAPERHOOK_E2E_URL;
const KEY = process.env.PAPERHOOK_E2E_KEY;
const SHOTS = new URL('./artifacts/', import.meta.url);
assert.ok(BASE && KEY, 'run through scripts/e2e.sh (PAPERHOOK_E2E_URL, PAPERHOOK_E2E_KEY)');

const IMG = '<img src=x onerror=window.__xss=1>';
const SCRIPT = '<script>window.__xss=1</script>';
const SVG = '"><svg onload=window.__xss=1>';

let browser; let page; let receiver; const dialogs = [];
let good; let bad; let goodJob; let badJob; let zipJob;

async function apiCall(method, path, body, headers = {}) {
  const res = await fetch(BASE + path, {
    method,
    headers: { 'x-auth': KEY, ...(body && !(body instanceof FormData) ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body instanceof FormData ? body : body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// A one-page PDF with a text layer (Helvetica, WinAnsi), like examples/make-examples.py.
function pdfWithLines(lines) {
  const esc = (s) => s.replace(/\\/g, '\\\\').replace(/\(/g, '\\(').replace(/\)/g, '\\)');
  const content = lines.map((t, i) => `BT /F1 12 Tf 56 ${780 - i * 24} Td (${esc(t)}) Tj ET\n`).join('');
  const z = deflateSync(Buffer.from(content, 'latin1'));
  const objs = [
    Buffer.from('<< /Type /Catalog /Pages 2 0 R >>'),
    Buffer.from('<< /Type /Pages /Kids [3 0 R] /Count 1 >>'),
    Buffer.from('<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>'),
    Buffer.from('<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>'),
    Buffer.concat([Buffer.from(`<< /Length ${z.length} /Filter /FlateDecode >>\nstream\n`), z, Buffer.from('\nendstream')]),
  ];
  const parts = [Buffer.from('%PDF-1.4\n')];
  let size = parts[0].length; const offsets = [];
  objs.forEach((body, i) => {
    offsets.push(size);
    const obj = Buffer.concat([Buffer.from(`${i + 1} 0 obj\n`), body, Buffer.from('\nendobj\n')]);
    parts.push(obj); size += obj.length;
  });
  const xref = `xref\n0 ${objs.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`
    + `trailer\n<< /Size ${objs.length + 1} /Root 1 0 R >>\nstartxref\n${size}\n%%EOF\n`;
  parts.push(Buffer.from(xref));
  return Buffer.concat(parts);
}

// A ZIP (stored, no compression) of the given [name, bytes] entries.
function zipOf(entries) {
  const locals = []; const centrals = []; let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name, 'utf8'); const crc = crc32(data);
    const local = Buffer.alloc(30); local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); local.writeUInt16LE(0x21, 12); local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18); local.writeUInt32LE(data.length, 22); local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46); central.writeUInt32LE(0x02014b50, 0); central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6); central.writeUInt16LE(0x0800, 8); central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16); central.writeUInt32LE(data.length, 20); central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(n.length, 28); central.writeUInt32LE(offset, 42);
    locals.push(local, n, data); centrals.push(central, n);
    offset += local.length + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22); end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10); end.writeUInt32LE(cd.length, 12); end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

async function waitFor(what, check, ms = 60_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Opens a dashboard page fresh and checks that nothing ran and no planted
// element exists; returns the text of <main>.
async function visit(hash, ready) {
  await page.goto('about:blank');
  await page.goto(`${BASE}/dashboard${hash}`);
  await page.waitForSelector(ready);
  await page.waitForLoadState('networkidle');
  assert.equal(await page.evaluate(() => window.__xss), undefined, `script ran on ${hash}`);
  assert.equal(await page.$$eval('main img[src="x"], main script, main svg, main iframe', (els) => els.length), 0, `markup parsed on ${hash}`);
  assert.deepEqual(dialogs, [], `a dialog opened on ${hash}`);
  return page.textContent('main');
}

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  // The webhook receiver answers with markup too (shown as the response excerpt).
  receiver = createServer((req, res) => { req.resume(); req.on('end', () => res.writeHead(200, { 'content-type': 'text/html' }).end(`${IMG}${SCRIPT}`)); });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const hook = `http://127.0.0.1:${receiver.address().port}/hook?next=${IMG}`;

  good = await apiCall('POST', '/v1/templates', {
    name: `${IMG} ${SCRIPT} ${SVG}`,
    fields: [
      { name: IMG, type: 'text', locator: { kind: 'regex', pattern: 'Note:\\s*(.+)' } },
      { name: SCRIPT, type: 'text', locator: { kind: 'regex', pattern: 'Ref:\\s*(.+)' } },
      { name: SVG, type: 'text', locator: { kind: 'regex', pattern: 'Memo:\\s*(.+)' } },
    ],
    webhook: { url: hook, headers: { 'X-Planted': `Bearer ${IMG}`, 'X-Other': SCRIPT } },
  });
  assert.equal(good.status, 201, JSON.stringify(good.body));
  bad = await apiCall('POST', '/v1/templates', {
    name: SCRIPT,
    fields: [{ name: SVG, type: 'text', required: true, locator: { kind: 'regex', pattern: 'Nowhere:\\s*(\\d+)' } }],
  });
  assert.equal(bad.status, 201, JSON.stringify(bad.body));

  const pdf = pdfWithLines(['Planted markup test document', `Note: ${IMG}`, `Ref: ${SCRIPT}`, `Memo: ${SVG}`]);
  await writeFile(new URL('xss-sample.pdf', SHOTS), pdf);
  for (const [template, name] of [[good.body.id, `${IMG}.pdf`], [bad.body.id, `${SCRIPT}.pdf`]]) {
    const form = new FormData();
    form.append('template_id', template);
    form.append('static_values', JSON.stringify({ note: SCRIPT, [IMG]: SVG }));
    form.append('actual_image', new Blob([pdf], { type: 'application/pdf' }), name);
    const sub = await apiCall('POST', '/process-job', form);
    assert.equal(sub.status, 202, JSON.stringify(sub.body));
    if (template === good.body.id) goodJob = sub.body.job_id; else badJob = sub.body.job_id;
  }
  // Multipart file names lose their angle brackets; ZIP entry names are kept.
  const zip = await apiCall('POST', '/process-job', { template_id: good.body.id, actual_image: zipOf([[`${IMG}.pdf`, pdf]]).toString('base64') });
  assert.equal(zip.status, 202, JSON.stringify(zip.body));
  zipJob = zip.body.job_id;
  // The jobs finish, and the good one's delivery is recorded.
  await waitFor('the jobs to finish and deliver', async () => {
    const g = await apiCall('GET', `/v1/jobs/${goodJob}`);
    const b = await apiCall('GET', `/v1/jobs/${badJob}`);
    const attempts = g.body.documents?.[0]?.delivery?.attempts ?? [];
    const z = await apiCall('GET', `/v1/jobs/${zipJob}`);
    return g.body.status === 'SUCCESS' && b.body.status === 'FAILED' && z.body.finished_at
      && attempts.some((a) => a.status_code === 200);
  });
  const g = await apiCall('GET', `/v1/jobs/${goodJob}`);
  assert.equal(g.body.documents[0].result[IMG], IMG, 'the planted text was extracted as is');
  assert.equal(g.body.documents[0].result[SCRIPT], SCRIPT);

  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(`${BASE}/dashboard`);
  await page.fill('#api-key', KEY);
  await page.click('button[type=submit]');
  await page.waitForSelector('#credits');
});

after(async () => {
  // Leave the templates of the other tests as the newest ones.
  for (const t of [good, bad]) if (t?.body?.id) await apiCall('DELETE', `/v1/templates/${t.body.id}`);
  await browser?.close();
  receiver?.close();
});

test('template names, field names, webhook URL and headers show as text', async () => {
  let text = await visit('#/templates', `a[href="#/templates/${good.body.id}"]`);
  assert.ok(text.includes(`${IMG} ${SCRIPT} ${SVG}`), 'the name is shown literally');
  assert.ok(text.includes(IMG) && text.includes('/hook?next='), 'the webhook URL is shown literally');
  assert.equal(await page.textContent(`a[href="#/templates/${bad.body.id}"]`), SCRIPT);

  text = await visit(`#/templates/${good.body.id}`, '#t-name');
  assert.equal(await page.inputValue('#t-name'), `${IMG} ${SCRIPT} ${SVG}`);
  const names = await page.$$eval('.field-name', (els) => els.map((e) => e.value));
  assert.deepEqual(names, [IMG, SCRIPT, SVG]);
  assert.match(await page.inputValue('#t-webhook-url'), /hook\?next=<img src=x onerror=window.__xss=1>$/);
  const values = await page.$$eval('input[aria-label="Header value"]', (els) => els.map((e) => e.value));
  assert.ok(values.every((v) => v.startsWith('****')), `header values are masked: ${values}`);
  await page.screenshot({ path: new URL('xss-01-template.png', SHOTS).pathname, fullPage: true });

  // Testing the template on the planted sample shows the values and the
  // boxes labelled with the field names, as text.
  await page.setInputFiles('#sample-file', new URL('xss-sample.pdf', SHOTS).pathname);
  await page.waitForFunction(() => document.querySelector('#sample-image')?.naturalWidth > 0);
  await page.click('#test-template');
  await page.waitForSelector('#test-json');
  assert.ok((await page.textContent('#test-json')).includes(IMG));
  await page.waitForSelector('.box span');
  const labels = await page.$$eval('.box span', (els) => els.map((e) => e.textContent));
  assert.ok(labels.includes(IMG) && labels.includes(SCRIPT), `box labels: ${labels}`);
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'script ran while testing the template');
  assert.equal(await page.$$eval('main img[src="x"], main script, main svg', (els) => els.length), 0);
});

test('extracted text, file names, static_values and the receiver answer show as text', async () => {
  await visit('#/jobs', `#jobs a[href="#/jobs/${goodJob}"]`);
  let text = await visit(`#/jobs/${goodJob}`, 'table.attempts td');
  const result = await page.textContent('.document .result');
  assert.ok(result.includes(IMG) && result.includes(SCRIPT) && result.includes(SVG), result);
  // The file name as the API stores it (the multipart parser may have cleaned it).
  const stored = (await apiCall('GET', `/v1/jobs/${goodJob}`)).body;
  console.log(`stored file name: ${JSON.stringify(stored.file_name)}`);
  assert.ok(text.includes(stored.file_name), 'the file name is shown literally');
  assert.ok(text.includes(`"note": "${SCRIPT}"`), 'static_values are shown literally');
  assert.ok((await page.textContent('table.attempts')).includes(`${IMG}${SCRIPT}`), 'the receiver answer is shown literally');
  await page.screenshot({ path: new URL('xss-02-job.png', SHOTS).pathname, fullPage: true });

  text = await visit(`#/jobs/${zipJob}`, '.document h2');
  assert.ok(text.includes(`Document 0 · ${IMG}.pdf`), 'the ZIP entry name is shown literally');

  text = await visit(`#/jobs/${badJob}`, '.document .error');
  assert.ok((await page.textContent('.document .error')).includes('<svg onload=window.__xss=1>'), 'the missing field is named literally');
  assert.ok(text.includes((await apiCall('GET', `/v1/jobs/${badJob}`)).body.file_name));
});

test('the other pages stay clean too', async () => {
  await visit('#/', '#quickstart');
  await visit('#/credits', 'text=credits left');
  await visit('#/keys', '#keys');
});
