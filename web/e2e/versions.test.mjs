// End-to-end test of the dashboard's secrets field, versions tab and aliases panel (issue 16):
// the real `voltrun serve` binary driven through Debian's Chromium by playwright-core. The
// function form picks secrets by name and shows the API's 400 at the field; the Versions tab
// lists versions, shows one's code read-only, diffs two, and shows the API's 409s on delete;
// the Aliases panel creates an alias, sets a canary weight, binds and unbinds a route, and
// rolls back in one click; the executions table shows the version and the qualifier. Every
// change is checked against the API too.
//
//   npm run e2e        builds target/debug/voltrun with cargo first (or VOLTRUN_BIN=…)
//   node --test e2e/versions.test.mjs    this file only
//   CHROMIUM=…         another Chromium (default /usr/bin/chromium)
//   VOLTRUN_E2E_SANDBOX=process    the development tier, when not root

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WEB, buildVoltrun, launchChromium, startServer, stopServer } from './harness.mjs';

const SHOTS = path.join(WEB, 'e2e', 'screenshots');
const EMAIL = `versions-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery';
const V1 = "def handler(event, context):\n    return {'v': 1}\n";
const V2 = "def handler(event, context):\n    return {'v': 2}\n";

let server;
let base;
let dataDir;
let browser;
let page;
let token;
const problems = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  buildVoltrun();
  dataDir = mkdtempSync(path.join(tmpdir(), 'voltrun-e2e-versions-'));
  server = await startServer(dataDir);
  [base] = server.urls;
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => {
    // The refusals this test provokes are logged by Chromium as failed loads.
    if (m.type() === 'error' && !/status of (400|409)/.test(m.text())) problems.push(`console.error: ${m.text()}`);
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

/** The API as the same user, outside the browser. */
async function call(method, p, body) {
  if (!token) {
    const login = await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email: EMAIL, password: PASSWORD }) });
    assert.equal(login.status, 200);
    token = (await login.json()).token;
  }
  const r = await fetch(base + p, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

const tab = (name) => page.getByRole('tab', { name });
const versionRow = (n) => page.locator(`[data-testid="versions-table"] tr[data-version="${n}"]`);
const aliasRow = (name) => page.locator(`[data-testid="alias-row"][data-alias="${name}"]`);

step('register, and two secrets exist', async () => {
  await page.goto(base + '/register');
  await page.getByLabel('Name').fill('Versions Tester');
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByLabel('Password').press('Enter');
  await page.waitForURL(/\/functions$/);
  for (const name of ['TOKEN_A', 'TOKEN_B']) assert.equal((await call('POST', '/api/secrets', { name, value: `value-of-${name}` })).status, 201);
});

step('the function form picks secrets by name and shows the API 400 at the field', async () => {
  await page.goto(base + '/functions/new');
  await page.locator('#f-name').fill('shop');
  // TOKEN_A is also an environment variable: the API refuses the pair, naming `secrets`.
  await page.getByRole('button', { name: 'Add variable' }).click();
  await page.getByLabel('Variable 1 name').fill('TOKEN_A');
  await page.getByLabel('Variable 1 value').fill('plain');
  const picker = page.locator('#f-secrets');
  const options = await picker.locator('option').allInnerTexts();
  assert.deepEqual(options.slice(1), ['TOKEN_A', 'TOKEN_B'], 'the user’s secrets, names only');
  await picker.selectOption('TOKEN_A');
  await page.getByRole('button', { name: 'Add secret' }).click();
  await picker.selectOption('TOKEN_B');
  await page.getByRole('button', { name: 'Add secret' }).click();
  assert.deepEqual(await page.locator('[data-testid="secret-entry"]').evaluateAll((els) => els.map((e) => e.dataset.secret)), ['TOKEN_A', 'TOKEN_B']);
  assert.equal(await picker.locator('option').count(), 1, 'picked secrets leave the list');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  const err = page.locator('#f-secrets-err');
  await err.waitFor();
  assert.match(await err.innerText(), /secrets: TOKEN_A is also in env/);
  assert.equal(await picker.getAttribute('aria-invalid'), 'true');
  assert.ok(!(await page.content()).includes('value-of-TOKEN'), 'no secret value in the page');
  await page.getByRole('button', { name: 'Remove variable 1' }).click();
  await page.getByRole('button', { name: 'Create function' }).first().click();
  await page.waitForURL(/\/functions\/fn_/);
  await page.locator('[data-testid="fn-secrets"]').getByText('TOKEN_A, TOKEN_B').waitFor();
  const f = await call('GET', '/api/functions/shop');
  assert.deepEqual(f.body.secrets, ['TOKEN_A', 'TOKEN_B']);
  // Two more versions with known code.
  for (const code of [V1, V2]) assert.equal((await call('PUT', '/api/functions/shop', { code, secrets: [] })).status, 200);
  const now = await call('GET', '/api/functions/shop');
  assert.equal(now.body.version, 3);
  assert.deepEqual(now.body.secrets, []);
});

step('the Versions tab lists the versions, shows a version’s code read-only and diffs two', async () => {
  await page.reload();
  await tab('Versions').click();
  await versionRow(3).waitFor();
  const listed = await page.locator('[data-testid="versions-table"] tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.version)));
  assert.deepEqual(listed, [3, 2, 1], 'newest first');
  assert.match(await versionRow(3).innerText(), /latest/);
  await page.getByRole('button', { name: 'View version 2' }).click();
  const code = page.locator('[data-testid="version-code"] .view-lines');
  await page.waitForFunction(() => document.querySelector('[data-testid="version-code"] .view-lines')?.textContent.replace(/\u00a0/g, ' ').includes("return {'v': 1}"));
  assert.ok((await code.textContent()).replace(/\u00a0/g, ' ').includes("return {'v': 1}"));
  // Read-only: typing changes nothing.
  await page.locator('[data-testid="version-code"] .monaco-editor').click();
  await page.keyboard.type('XYZZY');
  assert.ok(!(await code.textContent()).includes('XYZZY'), 'the version’s code is read-only');
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();
  await page.locator('[data-testid="version-code"]').waitFor({ state: 'detached' });
  await page.getByLabel('Older version').selectOption('2');
  await page.getByLabel('Newer version').selectOption('3');
  await page.waitForFunction(() => {
    const t = document.querySelector('[data-testid="code-diff"]')?.textContent.replace(/\u00a0/g, ' ') ?? '';
    return t.includes("{'v': 1}") && t.includes("{'v': 2}");
  });
  await page.addStyleTag({ content: '.toasts { display: none !important; }' });
  await page.screenshot({ path: path.join(SHOTS, 'versions.png'), fullPage: true });
});

step('an alias is created, and deletes the API refuses show its 409', async () => {
  await tab('Aliases').click();
  await page.getByText('No aliases.').waitFor();
  await page.locator('#alias-name').fill('live');
  await page.locator('#alias-version').selectOption('2');
  await page.getByRole('button', { name: 'Create alias' }).click();
  await aliasRow('live').waitFor();
  assert.match(await aliasRow('live').locator('[data-testid="alias-target"]').innerText(), /→ v2$/);
  const a = await call('GET', '/api/functions/shop/aliases/live');
  assert.equal(a.body.version, 2);
  // The same name again: the API's 409.
  await page.locator('#alias-name').fill('live');
  await page.getByRole('button', { name: 'Create alias' }).click();
  await page.locator('[data-testid="alias-create-error"]').getByText(/already has an alias/).waitFor();

  await tab('Versions').click();
  await versionRow(2).getByText('live').waitFor();
  await versionRow(2).getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Delete v2' }).click();
  await page.locator('[data-testid="versions-error"]').getByText(/points to version 2/).waitFor();
  await versionRow(3).getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Delete v3' }).click();
  await page.locator('[data-testid="versions-error"]').getByText(/latest version cannot be deleted/).waitFor();
  // Version 1 is free: it goes.
  await versionRow(1).getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Delete v1' }).click();
  await versionRow(1).waitFor({ state: 'detached' });
  assert.equal((await call('GET', '/api/functions/shop/versions/1')).status, 404);
});

step('a canary weight, a route bound and unbound, and a one-click rollback', async () => {
  await tab('Aliases').click();
  const row = aliasRow('live');
  await row.waitFor();
  await row.locator('#alias-live-extra').selectOption('3');
  await row.locator('#alias-live-weight').fill('0.25');
  await row.getByRole('button', { name: 'Save live' }).click();
  await row.locator('[data-testid="alias-target"]').getByText('v2 (75%) + v3 (25%)').waitFor();
  assert.deepEqual((await call('GET', '/api/functions/shop/aliases/live')).body.weights, { 3: 0.25 });
  // The slider moves the same weight.
  await aliasRow('live').getByLabel('Canary weight of live', { exact: true }).focus();
  await page.keyboard.press('ArrowRight');
  assert.equal(await aliasRow('live').locator('#alias-live-weight').inputValue(), '0.26');
  // A weight out of range: the API's 400 shows in the row.
  await aliasRow('live').locator('#alias-live-weight').fill('1.5');
  await aliasRow('live').getByRole('button', { name: 'Save live' }).click();
  await aliasRow('live').locator('[data-testid="alias-error"]').getByText(/weights/).waitFor();
  await aliasRow('live').locator('#alias-live-extra').selectOption('');
  await aliasRow('live').locator('#alias-live-route').fill('shop-live');
  await aliasRow('live').getByRole('button', { name: 'Save live' }).click();
  await aliasRow('live').locator('[data-testid="alias-route"]').getByText('/api/execute/shop-live').waitFor();
  let a = (await call('GET', '/api/functions/shop/aliases/live')).body;
  assert.equal(a.route, 'shop-live');
  assert.ok(a.weights === null || Object.keys(a.weights).length === 0, JSON.stringify(a));
  const viaRoute = await fetch(`${base}/api/execute/shop-live`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: '{}' });
  assert.deepEqual(await viaRoute.json(), { v: 1 }, 'the route runs the alias’s version (v2 has V1’s code)');
  await aliasRow('live').getByRole('button', { name: 'Unbind route' }).click();
  await aliasRow('live').locator('[data-testid="alias-route"]').waitFor({ state: 'detached' });
  assert.equal((await call('GET', '/api/functions/shop/aliases/live')).body.route, null);

  // Promote to v3, then roll back to v2 with one click.
  await aliasRow('live').locator('#alias-live-version').selectOption('3');
  await aliasRow('live').getByRole('button', { name: 'Save live' }).click();
  await aliasRow('live').locator('[data-testid="alias-target"]').getByText('→ v3').waitFor();
  assert.equal((await call('GET', '/api/functions/shop/aliases/live')).body.version, 3);
  await aliasRow('live').getByRole('button', { name: 'Roll back to v2' }).click();
  await aliasRow('live').locator('[data-testid="alias-target"]').getByText('→ v2').waitFor();
  a = (await call('GET', '/api/functions/shop/aliases/live')).body;
  assert.equal(a.version, 2);
});

step('the history shows the version that ran and the qualifier', async () => {
  const run = await call('POST', '/api/functions/shop:live/execute', {});
  assert.equal(run.status, 200, JSON.stringify(run.body));
  assert.equal(run.body.function_version, 2);
  await tab('Invoke and history').click();
  // The invoke panel takes a qualifier too.
  await page.locator('#invoke-qualifier').fill('3');
  await page.getByTestId('invoke').click();
  await page.locator('[data-testid="history-table"]').waitFor();
  // The run just invoked with qualifier 3 joins the history (the route's and the API's runs
  // through `live` are there already).
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="history-table"] [data-testid="exec-version"]')].some((td) => /v3\s+via 3/.test(td.textContent)));
  const cells = await page.locator('[data-testid="history-table"] [data-testid="exec-version"]').allInnerTexts();
  assert.ok(cells.some((t) => /v2\s+via live/.test(t)), cells.join(' | '));
  assert.ok(cells.some((t) => /v3\s+via 3/.test(t)), cells.join(' | '));
});
