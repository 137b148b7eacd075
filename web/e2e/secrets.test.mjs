// End-to-end test of the dashboard's secrets page (issue 16): the real `voltrun serve` binary
// driven through Debian's Chromium by playwright-core. A secret is created, listed with its
// value hidden, replaced and deleted; a delete refused while a function names it shows the
// server's 409; and the value typed in is never in the page after it is saved (the API never
// returns it, and the form clears it).
//
//   npm run e2e        builds target/debug/voltrun with cargo first (or VOLTRUN_BIN=…)
//   CHROMIUM=…         another Chromium (default /usr/bin/chromium)
//   VOLTRUN_E2E_SANDBOX=process    the development tier, when not root

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WEB, buildVoltrun, launchChromium, startServer, stopServer } from './harness.mjs';

const SHOTS = path.join(WEB, 'e2e', 'screenshots');
const EMAIL = `secrets-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery';
const VALUE = `e2e-secret-value-${Date.now()}`;

let server;
let base;
let dataDir;
let browser;
let page;
const problems = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  buildVoltrun();
  dataDir = mkdtempSync(path.join(tmpdir(), 'voltrun-e2e-secrets-'));
  server = await startServer(dataDir);
  [base] = server.urls;
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 409/.test(m.text())) problems.push(`console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.stack ?? e}`));
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer(server?.child);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  if (problems.length) console.error(`server log:\n${(server?.log() ?? '').slice(-4000)}`);
});

function step(name, fn) {
  test(name, { timeout: 120_000 }, async () => {
    const before = problems.length;
    await fn();
    assert.deepEqual(problems.slice(before), [], 'unexpected console or page errors');
  });
}

/** The API with the user's own token (outside the browser). */
async function call(method, p, body) {
  const login = await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email: EMAIL, password: PASSWORD }) });
  assert.equal(login.status, 200);
  const { token } = await login.json();
  const r = await fetch(base + p, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

const row = (name) => page.locator(`[data-testid="secrets-table"] tr[data-name="${name}"]`);
const html = () => page.evaluate(() => document.documentElement.outerHTML);

step('register and open the secrets page', async () => {
  await page.goto(base + '/register');
  await page.getByLabel('Name').fill('Secrets Tester');
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByLabel('Password').press('Enter');
  await page.waitForURL(/\/functions$/);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Secrets' }).click();
  await page.waitForURL(/\/secrets$/);
  await page.getByText('No secrets').waitFor();
});

step('a secret is created, listed without its value, and the form forgets the value', async () => {
  await page.locator('#secret-name').fill('api_token');
  assert.equal(await page.locator('#secret-name').inputValue(), 'API_TOKEN', 'names are upper-cased as typed');
  assert.equal(await page.locator('#secret-value').getAttribute('type'), 'password');
  await page.locator('#secret-value').fill(VALUE);
  await page.getByRole('button', { name: 'Create secret' }).click();
  await row('API_TOKEN').waitFor();
  assert.equal(await page.locator('#secret-value').inputValue(), '');
  assert.match(await row('API_TOKEN').innerText(), /hidden/);
  assert.ok(!(await html()).includes(VALUE), 'the value is in the page');
  await page.reload();
  await row('API_TOKEN').waitFor();
  assert.ok(!(await html()).includes(VALUE), 'the value is in the page after a reload');
  const listed = await call('GET', '/api/secrets');
  assert.deepEqual(listed.body.items.map((s) => s.name), ['API_TOKEN']);
  await page.addStyleTag({ content: '.toasts { display: none !important; }' });
  await page.screenshot({ path: path.join(SHOTS, 'secrets.png'), fullPage: true });
});

step('replace takes a new value for the same name', async () => {
  const before = (await call('GET', '/api/secrets/API_TOKEN')).body.updated_at;
  await row('API_TOKEN').getByRole('button', { name: 'Replace' }).click();
  assert.equal(await page.locator('#secret-name').inputValue(), 'API_TOKEN');
  await page.locator('#secret-value').fill(`${VALUE}-2`);
  await page.getByRole('button', { name: 'Replace value' }).click();
  await page.waitForFunction(() => document.querySelector('#secret-value')?.value === '');
  const after = (await call('GET', '/api/secrets/API_TOKEN')).body.updated_at;
  assert.ok(after > before, `${after} > ${before}`);
  assert.ok(!(await html()).includes(VALUE));
});

step('delete is refused while a function names the secret, then works', async () => {
  const f = await call('POST', '/api/functions', { name: 'uses-secret', runtime: 'python', code: 'def handler(e, c):\n    return 1\n', secrets: ['API_TOKEN'] });
  assert.equal(f.status, 201, JSON.stringify(f.body));
  await page.reload(); // drops the screenshot's style that hid the toasts
  await row('API_TOKEN').getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Delete secret' }).click();
  await page.getByText(/in use by function\(s\) uses-secret/).first().waitFor();
  assert.equal(await row('API_TOKEN').count(), 1);
  assert.equal((await call('DELETE', '/api/functions/uses-secret')).status, 204);
  await row('API_TOKEN').getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Delete secret' }).click();
  await page.getByText('No secrets').waitFor();
});
