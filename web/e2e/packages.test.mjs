// End-to-end test of the dashboard's packages (issue 15): the real `voltrun serve` (namespace
// sandbox by default, a fresh data dir, port 0) driven through Debian's Chromium. A zip package
// is uploaded, its tree shown, a file opened, edited and saved (re-zipped), and the new code
// runs; a multi-file function is built in the tree; dependency builds (pip, against the real
// index) show pending, then active or failed, with their logs; layers are uploaded, picked on
// the function form and mounted. Every step is a test, in order; console errors a step did not
// expect fail it. Screenshots go to e2e/screenshots/ (gitignored).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, openSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { strToU8, strFromU8, unzipSync, zipSync } from 'fflate';
import { WEB, buildVoltrun, launchChromium, startServer, stopServer } from './harness.mjs';

const SHOTS = path.join(WEB, 'e2e', 'screenshots');
const STEP_TIMEOUT = 30_000;
/** A pip build against the real index, on a loaded machine. */
const BUILD_TIMEOUT = 240_000;

const EMAIL = `pkg-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery';

/** A file name a hostile archive could carry: markup, if it were ever rendered as HTML. */
const HOSTILE_NAME = 'data/<img src=x onerror="window.__pwned=1">.txt';
const HOSTILE_TEXT = '<script>window.__pwned = 2</script>\n<img src=x onerror="window.__pwned=3">\n';

// Not a real PNG, but its bytes are not text (a NUL and invalid UTF-8): listed, never opened.
const LOGO = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0xff, 0xfe, 0x80, 0x81, ...new Array(200).fill(7)]);

const ZIP_FILES = {
  'main.py': [
    'import os',
    'from helpers.greet import greet',
    '',
    '',
    'def handler(event, context):',
    '    with open("data/greeting.txt") as f:  # relative to /var/task, the cwd',
    '        word = f.read().strip()',
    '    return {"message": greet(word, event.get("name", "world")), "logo": os.path.getsize("data/logo.png")}',
    '',
  ].join('\n'),
  'helpers/__init__.py': '',
  'helpers/greet.py': 'def greet(word, name):\n    return f"{word}, {name}!"\n',
  'data/greeting.txt': 'Hello\n',
  [HOSTILE_NAME]: HOSTILE_TEXT,
};

/** A zip of text files plus the binary logo, as a person's zip tool would make it. */
function packageZip() {
  const z = {};
  for (const [p, t] of Object.entries(ZIP_FILES)) z[p] = strToU8(t);
  z['data/logo.png'] = [LOGO, { level: 0 }];
  return Buffer.from(zipSync(z));
}
/** Made once: a zip records the time it was made. */
const PKG_ZIP = packageZip();

/** A zip whose central directory claims 300 MiB for one entry: refused before inflating. */
function bombZip() {
  const zip = zipSync({ 'bomb.bin': new Uint8Array(1024) });
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const claimed = 300 * 1024 * 1024;
  for (let i = 0; i + 4 <= zip.length; i++) {
    const sig = view.getUint32(i, true);
    if (sig === 0x04034b50) view.setUint32(i + 22, claimed, true); // local header: uncompressed size
    if (sig === 0x02014b50) view.setUint32(i + 24, claimed, true); // central directory: uncompressed size
  }
  return Buffer.from(zip);
}

function layerZip(files) {
  const z = {};
  for (const [p, t] of Object.entries(files)) z[p] = strToU8(t);
  return Buffer.from(zipSync(z));
}

let server;
let base;
let dataDir;
let browser;
let context;
let page;
let zipFnId;
let bigZipPath;
const problems = [];
let allowed = [];

function watch(p, label) {
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const i = allowed.findIndex((re) => re.test(text));
    if (i >= 0) {
      allowed.splice(i, 1);
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

async function shot(p, name) {
  await p.waitForTimeout(250); // let transitions settle
  await p.evaluate(() => window.scrollTo(0, 0));
  const style = await p.addStyleTag({ content: '.toasts { display: none !important; }' });
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  await style.evaluate((el) => el.remove());
}

function step(name, fn, timeout = 120_000) {
  test(name, { timeout }, async () => {
    const before = problems.length;
    await fn();
    assert.deepEqual(problems.slice(before), [], 'unexpected console errors');
  });
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  buildVoltrun();
  dataDir = mkdtempSync(path.join(tmpdir(), 'voltrun-e2e-pkg-'));
  // A zip past the 50 MiB limit, sparse: picked by path, never read by the page.
  bigZipPath = path.join(dataDir, 'too-big.zip');
  const fd = openSync(bigZipPath, 'w');
  ftruncateSync(fd, 60 * 1024 * 1024);
  closeSync(fd);
  server = await startServer(path.join(dataDir, 'server'));
  [base] = server.urls;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
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

let tokenCache;
async function apiToken() {
  if (!tokenCache) {
    const r = await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email: EMAIL, password: PASSWORD }) });
    assert.equal(r.status, 200);
    tokenCache = (await r.json()).token;
  }
  return tokenCache;
}

async function apiGet(p) {
  const r = await fetch(base + p, { headers: { Authorization: `Bearer ${await apiToken()}` } });
  assert.equal(r.status, 200, `GET ${p}: ${r.status}`);
  return r;
}

/** Replaces the content of the Monaco editor inside `container`: select all and paste. */
async function pasteInEditor(p, container, text) {
  const editor = p.locator(container).locator('.monaco-editor').first();
  await editor.waitFor();
  await editor.click();
  await p.evaluate((t) => navigator.clipboard.writeText(t), text);
  await p.keyboard.press('Control+A');
  await p.keyboard.press('Control+V');
  const first = text.split('\n')[0];
  await p.waitForFunction(
    ([sel, line]) => document.querySelector(sel)?.querySelector('.view-lines')?.textContent.replace(/\u00a0/g, ' ').includes(line),
    [container, first],
  );
}

/** The paths the tree inside `scope` lists, in order. */
async function treePaths(scope) {
  return scope.getByTestId('tree-file').evaluateAll((els) => els.map((e) => e.dataset.path));
}

/** Invokes the function on its page with `input` and returns the output the page shows, parsed, once it succeeded. */
async function invoke(input) {
  await pasteInEditor(page, '[data-testid="editor-json"]', input);
  const ran = page.waitForResponse((r) => r.request().method() === 'POST' && /^\/api\/functions\/[^/]+\/execute$/.test(new URL(r.url()).pathname));
  await page.getByTestId('invoke').click();
  const rec = await (await ran).json();
  assert.equal(rec.status, 'success', `the run failed: ${JSON.stringify(rec.error)}`);
  // This run's result, not the one shown before it.
  const detail = page.locator('.invoke-result [data-testid="execution-detail"][data-status="success"]', { hasText: rec.id });
  await detail.waitFor();
  return JSON.parse(await detail.getByTestId('exec-output').innerText());
}

/** The paths of the function page's package tree, once it has loaded. */
async function packageTree() {
  const card = page.getByTestId('package-card');
  await card.getByTestId('tree-file').first().waitFor();
  return treePaths(card);
}

/** A function of the user, from the API. */
async function fnOf(id) {
  return (await apiGet(`/api/functions/${id}`)).json();
}

/** Starts a new function with `name` on the Python runtime with the given code source picked. */
async function newFunction(name, source) {
  await page.goto(base + '/functions/new');
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Runtime').selectOption('python3.11');
  if (source) await page.getByLabel(source).check();
}

step('register', async () => {
  await page.goto(base + '/register');
  await page.getByLabel('Name').fill('Grace Hopper');
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(/\/functions$/);
});

step('upload a zip package: its tree before and after create, and it runs', async () => {
  await newFunction('pkg-zip', 'Upload a zip');
  // A package handler is module.function.
  assert.equal(await page.getByLabel('Handler').inputValue(), 'main.handler');
  await page.getByTestId('zip-input').setInputFiles({ name: 'pkg.zip', mimeType: 'application/zip', buffer: PKG_ZIP });
  const preview = page.getByTestId('zip-preview');
  await preview.getByTestId('tree-file').first().waitFor();
  const expected = ['data/<img src=x onerror="window.__pwned=1">.txt', 'data/greeting.txt', 'data/logo.png', 'helpers/__init__.py', 'helpers/greet.py', 'main.py'];
  assert.deepEqual(await treePaths(preview), expected);
  await shot(page, 'pkg-zip-preview');
  const created = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/functions');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  const resp = await created;
  assert.equal(resp.status(), 201, await resp.text());
  const sent = resp.request().postDataJSON();
  assert.ok(typeof sent.zip === 'string' && !('code' in sent) && !('files' in sent), 'the zip went up as `zip`');
  assert.deepEqual(Buffer.from(sent.zip, 'base64'), PKG_ZIP, 'the zip went up byte for byte');
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  zipFnId = page.url().split('/').pop();
  const card = page.getByTestId('package-card');
  await card.getByTestId('tree-file').first().waitFor();
  assert.deepEqual(await treePaths(card), expected);
  // The handler's module is open first.
  assert.equal(await card.getByTestId('open-path').innerText(), 'main.py');
  await card.locator('[data-testid="file-editor"] .view-lines').getByText('from helpers.greet import greet').waitFor();
  await page.locator('[data-testid="fn-state"][data-state="active"]').waitFor();
  assert.deepEqual(await invoke('{"name": "Ada"}'), { message: 'Hello, Ada!', logo: 216 });
  await shot(page, 'pkg-zip-function');
});

step('binary files are listed, not opened; hostile names and contents stay text', async () => {
  const card = page.getByTestId('package-card');
  const logo = card.locator('[data-testid="tree-file"][data-path="data/logo.png"]');
  assert.equal(await logo.getAttribute('data-binary'), 'true');
  await logo.click();
  await card.getByTestId('binary-file').waitFor();
  assert.equal(await card.getByTestId('file-editor').count(), 0, 'no editor for a binary file');

  const hostile = card.locator('[data-testid="tree-file"]').filter({ hasText: '<img src=x onerror="window.__pwned=1">.txt' });
  await hostile.click();
  assert.equal(await card.getByTestId('open-path').innerText(), HOSTILE_NAME);
  await card.locator('[data-testid="file-editor"] .view-lines').getByText('<script>window.__pwned = 2</script>').waitFor();
  // Nothing of it became markup: no element from a name or a content, nothing ran.
  assert.equal(await page.locator('[data-testid="package-card"] img, [data-testid="package-card"] script').count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
});

step('open a file, edit it, save (re-zipped), invoke and see the new result', async () => {
  const card = page.getByTestId('package-card');
  await card.locator('[data-testid="tree-file"][data-path="helpers/greet.py"]').click();
  await card.locator('[data-testid="file-editor"] .view-lines').getByText('def greet(word, name):').waitFor();
  // Discarded edits are gone from the editor too.
  await pasteInEditor(page, '[data-testid="package-card"] [data-testid="file-editor"]', 'raise SystemExit("discard me")\n');
  await card.locator('[data-testid="tree-file"][data-path="helpers/greet.py"] .tree-dirty').waitFor();
  await card.getByRole('button', { name: 'Discard changes' }).click();
  await card.locator('[data-testid="file-editor"] .view-lines').getByText('def greet(word, name):').waitFor();
  assert.equal(await card.locator('.tree-dirty').count(), 0);
  assert.ok(!(await card.locator('[data-testid="file-editor"] .view-lines').innerText()).includes('discard me'));
  const edited = 'def greet(word, name):\n    return f"{word}, dear {name}!"\n';
  await pasteInEditor(page, '[data-testid="package-card"] [data-testid="file-editor"]', edited);
  await card.locator('[data-testid="tree-file"][data-path="helpers/greet.py"] .tree-dirty').waitFor();
  await shot(page, 'pkg-zip-edited');
  const saved = page.waitForResponse((r) => r.request().method() === 'PUT' && new URL(r.url()).pathname === `/api/functions/${zipFnId}`);
  await card.getByTestId('save-package').click();
  const resp = await saved;
  assert.equal(resp.status(), 200, await resp.text());
  assert.deepEqual(Object.keys(resp.request().postDataJSON()), ['zip'], 'a save sends the re-zipped package only');
  await page.getByTestId('toast').getByText('Saved pkg-zip (version 2)').waitFor();
  await page.locator('.fn-title', { hasText: 'v2' }).waitFor();
  await card.locator('.tree-dirty').first().waitFor({ state: 'detached' });
  assert.deepEqual(await invoke('{"name": "Ada"}'), { message: 'Hello, dear Ada!', logo: 216 });

  // The stored package holds the edit, and every other file byte for byte.
  const stored = unzipSync(new Uint8Array(await (await apiGet(`/api/functions/${zipFnId}/package`)).arrayBuffer()));
  assert.equal(strFromU8(stored['helpers/greet.py']), edited);
  assert.deepEqual(stored['data/logo.png'], LOGO);
  assert.equal(strFromU8(stored[HOSTILE_NAME]), HOSTILE_TEXT);
  assert.equal(strFromU8(stored['main.py']), ZIP_FILES['main.py']);
});

step('a zip past the limits gets a clear size error before any upload', async () => {
  const uploads = [];
  const onRequest = (r) => {
    if ((r.method() === 'PUT' || r.method() === 'POST') && r.url().includes('/api/functions')) uploads.push(r.url());
  };
  page.on('request', onRequest);
  try {
    const card = page.getByTestId('package-card');
    // 60 MiB (the limit is 50): refused by its size, before a byte is read.
    await card.getByTestId('upload-zip').setInputFiles(bigZipPath);
    await card.getByRole('alert').getByText('too-big.zip is 60 MiB; a package zip may be at most 50 MiB.').waitFor();
    // A small zip that says it unpacks to 300 MiB: refused before inflating.
    await card.getByTestId('upload-zip').setInputFiles({ name: 'bomb.zip', mimeType: 'application/zip', buffer: bombZip() });
    await card.getByRole('alert').getByText(/unpacks to more than 250 MiB/).waitFor();
    await shot(page, 'pkg-too-large');
    // The same on the create form.
    await newFunction('pkg-big', 'Upload a zip');
    await page.getByTestId('zip-input').setInputFiles(bigZipPath);
    await page.getByTestId('zip-error').getByText('too-big.zip is 60 MiB; a package zip may be at most 50 MiB.').waitFor();
  } finally {
    page.off('request', onRequest);
  }
  assert.deepEqual(uploads, [], 'nothing was uploaded');
  assert.equal((await fnOf(zipFnId)).version, 2, 'the package is unchanged');
});

step('upload a zip on the function page: it replaces the package', async () => {
  await page.goto(`${base}/functions/${zipFnId}`);
  const card = page.getByTestId('package-card');
  await card.getByTestId('tree-file').first().waitFor();
  const replacement = layerZip({ 'main.py': 'from app.core import run\n\nhandler = run\n', 'app/core.py': 'def run(event, context):\n    return "replaced " + event["name"]\n' });
  const saved = page.waitForResponse((r) => r.request().method() === 'PUT' && new URL(r.url()).pathname === `/api/functions/${zipFnId}`);
  await card.getByTestId('upload-zip').setInputFiles({ name: 'replacement.zip', mimeType: 'application/zip', buffer: replacement });
  const resp = await saved;
  assert.equal(resp.status(), 200, await resp.text());
  assert.deepEqual(Buffer.from(resp.request().postDataJSON().zip, 'base64'), replacement, 'the picked zip went up as it is');
  await page.getByTestId('toast').getByText('Uploaded replacement.zip (version 3)').waitFor();
  await page.locator('.fn-title', { hasText: 'v3' }).waitFor();
  await card.locator('[data-testid="tree-file"][data-path="app/core.py"]').waitFor();
  assert.deepEqual(await packageTree(), ['app/core.py', 'main.py']);
  assert.equal(await invoke('{"name": "Ada"}'), 'replaced Ada');
});

step('a multi-file function made in the tree (add, rename, delete) goes up as files', async () => {
  await newFunction('pkg-files', 'Several files');
  const tree = page.getByTestId('package-files');
  await tree.getByTestId('tree-file').first().waitFor();
  assert.deepEqual(await treePaths(tree), ['main.py']);
  const add = async (p) => {
    await tree.getByRole('button', { name: 'New file' }).click();
    await tree.getByLabel('New file path').fill(p);
    await tree.getByRole('button', { name: 'Add', exact: true }).click();
    await tree.locator(`[data-testid="tree-file"][data-path="${p}"]`).waitFor();
  };
  await add('lib/words.py');
  await pasteInEditor(page, '[data-testid="package-files"] [data-testid="file-editor"]', 'WORD = "Howdy"\n');
  await add('scratch.txt');
  await pasteInEditor(page, '[data-testid="package-files"] [data-testid="file-editor"]', 'notes\n');
  await tree.getByRole('button', { name: 'Rename' }).click();
  await tree.getByLabel('New path').fill('docs/readme.txt');
  await tree.getByRole('button', { name: 'Rename', exact: true }).last().click();
  await tree.locator('[data-testid="tree-file"][data-path="docs/readme.txt"]').waitFor();
  // A name the server would refuse is refused here, with the reason.
  await tree.getByRole('button', { name: 'New file' }).click();
  await tree.getByLabel('New file path').fill('../escape.py');
  await tree.getByRole('button', { name: 'Add', exact: true }).click();
  await tree.getByText('the path may not contain ".."').waitFor();
  await tree.getByLabel('New file path').fill('junk.txt');
  await tree.getByRole('button', { name: 'Add', exact: true }).click();
  await tree.getByRole('button', { name: 'Delete' }).click();
  await tree.getByRole('button', { name: 'Delete file' }).click();
  await tree.locator('[data-testid="tree-file"][data-path="junk.txt"]').waitFor({ state: 'detached' });
  await tree.locator('[data-testid="tree-file"][data-path="main.py"]').click();
  await pasteInEditor(
    page,
    '[data-testid="package-files"] [data-testid="file-editor"]',
    'from lib.words import WORD\n\n\ndef handler(event, context):\n    return WORD + ", " + event["name"] + "!"\n',
  );
  assert.deepEqual(await treePaths(tree), ['docs/readme.txt', 'lib/words.py', 'main.py']);
  await shot(page, 'pkg-files-form');
  const created = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/functions');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  const resp = await created;
  assert.equal(resp.status(), 201, await resp.text());
  const sent = resp.request().postDataJSON();
  assert.deepEqual(Object.keys(sent.files).sort(), ['docs/readme.txt', 'lib/words.py', 'main.py']);
  assert.equal(sent.files['docs/readme.txt'], 'notes\n');
  assert.equal(sent.handler, 'main.handler');
  assert.ok(!('code' in sent) && !('zip' in sent));
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  assert.deepEqual(await packageTree(), ['docs/readme.txt', 'lib/words.py', 'main.py']);
  assert.equal(await invoke('{"name": "Ada"}'), 'Howdy, Ada!');
});

step(
  'a function with a requirements.txt shows pending, then active with its build log',
  async () => {
    await newFunction('pkg-deps', 'Several files');
    const tree = page.getByTestId('package-files');
    await pasteInEditor(page, '[data-testid="package-files"] [data-testid="file-editor"]', 'import six\n\n\ndef handler(event, context):\n    return {"six": six.__version__}\n');
    await tree.getByRole('button', { name: 'New file' }).click();
    await tree.getByLabel('New file path').fill('requirements.txt');
    await tree.getByRole('button', { name: 'Add', exact: true }).click();
    await pasteInEditor(page, '[data-testid="package-files"] [data-testid="file-editor"]', 'six==1.17.0\n');
    const created = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/functions');
    await page.getByRole('button', { name: 'Create function' }).first().click();
    const resp = await created;
    assert.equal(resp.status(), 201, await resp.text());
    const body = await resp.json();
    assert.equal(body.state, 'pending', 'a first build leaves the function pending');
    assert.equal(body.package.dependencies, 'requirements.txt');
    await page.waitForURL(/\/functions\/fn_[^/]+$/);
    // While the build runs: the pending badge and the live log.
    await page.locator('[data-testid="fn-state"][data-state="pending"]').waitFor();
    await page.locator('[data-testid="build"][data-status="building"]').waitFor();
    await shot(page, 'pkg-deps-building');
    await page.locator('[data-testid="fn-state"][data-state="active"]').waitFor({ timeout: BUILD_TIMEOUT });
    await page.locator('[data-testid="build"][data-status="success"]').waitFor();
    const log = await page.getByTestId('build-logs').innerText();
    assert.match(log, /six/i, `the build log names the package: ${log}`);
    assert.match(log, /Successfully installed six-1\.17\.0/, log);
    await shot(page, 'pkg-deps-active');
    assert.deepEqual(await invoke('{}'), { six: '1.17.0' });
    // The list shows the state too.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Functions' }).click();
    await page.getByTestId('functions-table').locator('tbody tr', { hasText: 'pkg-deps' }).locator('[data-testid="fn-state"][data-state="active"]').waitFor();
  },
  BUILD_TIMEOUT + 60_000,
);

step(
  'an update whose build fails leaves the last good version serving, with the reason',
  async () => {
    await page.getByTestId('functions-table').getByText('pkg-deps').click();
    const card = page.getByTestId('package-card');
    await card.locator('[data-testid="tree-file"][data-path="requirements.txt"]').click();
    await card.locator('[data-testid="file-editor"] .view-lines').getByText('six==1.17.0').waitFor();
    await pasteInEditor(page, '[data-testid="package-card"] [data-testid="file-editor"]', 'six==1.17.0\nvoltrun-e2e-no-such-package==9.9.9\n');
    const saved = page.waitForResponse((r) => r.request().method() === 'PUT');
    await card.getByTestId('save-package').click();
    const resp = await saved;
    assert.equal(resp.status(), 200, await resp.text());
    const body = await resp.json();
    // The update builds; meanwhile the function as it serves is version 1, active.
    assert.deepEqual([body.state, body.last_update_status, body.version], ['active', 'in_progress', 1]);
    await page.getByTestId('toast').getByText(/building dependencies; v1 serves until the build succeeds/).waitFor();
    await page.locator('[data-testid="fn-state-update"][data-update="failed"]').waitFor({ timeout: BUILD_TIMEOUT });
    assert.match(await page.getByTestId('update-reason').innerText(), /The last update failed \(v1 still serves\): .+/);
    assert.equal(await page.getByTestId('fn-state').getAttribute('data-state'), 'active');
    await page.locator('[data-testid="build"][data-status="failed"]').waitFor();
    assert.match(await page.getByTestId('build-logs').innerText(), /voltrun-e2e-no-such-package/);
    // The tree shows what serves again: the old requirements.
    await card.locator('[data-testid="tree-file"][data-path="requirements.txt"]').click();
    await card.locator('[data-testid="file-editor"] .view-lines').getByText('six==1.17.0').waitFor();
    assert.ok(!(await card.locator('[data-testid="file-editor"] .view-lines').innerText()).includes('no-such-package'));
    await shot(page, 'pkg-deps-update-failed');
    assert.deepEqual(await invoke('{}'), { six: '1.17.0' });
  },
  BUILD_TIMEOUT + 60_000,
);

step(
  'a failed build shows failed with its log, and the function refuses to run',
  async () => {
    await newFunction('pkg-broken', 'Several files');
    const tree = page.getByTestId('package-files');
    await tree.getByRole('button', { name: 'New file' }).click();
    await tree.getByLabel('New file path').fill('requirements.txt');
    await tree.getByRole('button', { name: 'Add', exact: true }).click();
    await pasteInEditor(page, '[data-testid="package-files"] [data-testid="file-editor"]', 'voltrun-e2e-no-such-package==9.9.9\n');
    await page.getByRole('button', { name: 'Create function' }).first().click();
    await page.waitForURL(/\/functions\/fn_[^/]+$/);
    await page.locator('[data-testid="fn-state"][data-state="failed"]').waitFor({ timeout: BUILD_TIMEOUT });
    await page.locator('[data-testid="build"][data-status="failed"]').waitFor();
    assert.match(await page.getByTestId('build-logs').innerText(), /voltrun-e2e-no-such-package/);
    await page.getByTestId('build-reason').waitFor();
    await page.getByTestId('state-reason').waitFor();
    await shot(page, 'pkg-broken');
    await expectingConsoleErrors([/status of 409/], async () => {
      await page.getByTestId('invoke').click();
      await page.locator('.invoke-result').getByRole('alert').getByText('function_not_active').waitFor();
    });
  },
  BUILD_TIMEOUT + 60_000,
);

step('layers: upload two, pick them in order on the form, the function imports from them, delete', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Layers' }).click();
  await page.getByText('No layers yet').waitFor();
  const upload = async (name, files, version) => {
    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel('Zip').setInputFiles({ name: `${name}.zip`, mimeType: 'application/zip', buffer: layerZip(files) });
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await page.getByTestId('toast').getByText(`Uploaded ${name}:${version}`).waitFor();
  };
  await upload('e2e-libs', { 'python/e2e_layer.py': 'VALUE = "from layer v1"\n' }, 1);
  await upload('e2e-libs', { 'python/e2e_layer.py': 'VALUE = "from layer v2"\n' }, 2);
  await upload('e2e-more', { 'python/e2e_more.py': 'EXTRA = "more"\n' }, 1);
  const row = page.getByTestId('layers-table').locator('[data-testid="layer-row"][data-name="e2e-libs"]');
  await row.getByText('v2').waitFor();
  await shot(page, 'layers');

  await newFunction('pkg-layered');
  await pasteInEditor(page, '[data-testid="editor-python"]', 'import e2e_layer\nimport e2e_more\n\n\ndef handler(event, context):\n    return e2e_layer.VALUE + " + " + e2e_more.EXTRA\n');
  const picker = page.getByTestId('layers-picker');
  await picker.getByLabel('Layer', { exact: true }).selectOption('e2e-libs');
  await picker.getByLabel('Layer version').locator('option[value="2"]').waitFor({ state: 'attached' });
  assert.equal(await picker.getByLabel('Layer version').inputValue(), '2', 'the newest version is the default');
  await picker.getByRole('button', { name: 'Add layer' }).click();
  await picker.getByLabel('Layer', { exact: true }).selectOption('e2e-more');
  await picker.getByLabel('Layer version').locator('option[value="1"]').waitFor({ state: 'attached' });
  await picker.getByRole('button', { name: 'Add layer' }).click();
  await picker.getByRole('button', { name: 'Move e2e-more:1 up' }).click();
  const order = () => picker.getByTestId('layer-entry').evaluateAll((els) => els.map((e) => e.dataset.layer));
  assert.deepEqual(await order(), ['e2e-more:1', 'e2e-libs:2']);
  await shot(page, 'layers-picker');
  const created = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/functions');
  await page.getByRole('button', { name: 'Create function' }).first().click();
  const resp = await created;
  assert.equal(resp.status(), 201, await resp.text());
  assert.deepEqual(resp.request().postDataJSON().layers, ['e2e-more:1', 'e2e-libs:2']);
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  await page.getByTestId('fn-layers').getByText('e2e-libs:2').waitFor();
  assert.deepEqual(await page.getByTestId('fn-layers').locator('code').allInnerTexts(), ['e2e-more:1', 'e2e-libs:2']);
  assert.equal(await invoke('{}'), 'from layer v2 + more');

  // The edit form shows the layers; removing one and saving updates the function.
  await page.getByRole('link', { name: 'Edit' }).click();
  await page.waitForURL(/\/edit$/);
  await picker.getByTestId('layer-entry').nth(1).waitFor();
  assert.deepEqual(await order(), ['e2e-more:1', 'e2e-libs:2']);
  await picker.getByRole('button', { name: 'Remove e2e-more:1' }).click();
  const updated = page.waitForResponse((r) => r.request().method() === 'PUT');
  await page.getByRole('button', { name: 'Save changes' }).first().click();
  const put = await updated;
  assert.equal(put.status(), 200, await put.text());
  assert.deepEqual(put.request().postDataJSON().layers, ['e2e-libs:2']);
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  await page.getByTestId('fn-layers').getByText('e2e-libs:2').waitFor();
  assert.deepEqual(await page.getByTestId('fn-layers').locator('code').allInnerTexts(), ['e2e-libs:2']);

  // A version in use cannot be deleted; an unused one can.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Layers' }).click();
  await row.getByRole('button', { name: 'Versions' }).click();
  const versions = page.getByTestId('layer-versions');
  await versions.locator('[data-testid="layer-version"][data-version="2"]').waitFor();
  await expectingConsoleErrors([/status of 409/], async () => {
    await versions.locator('[data-testid="layer-version"][data-version="2"]').getByRole('button', { name: 'Delete' }).click();
    await versions.getByRole('button', { name: 'Delete e2e-libs:2' }).click();
    await page.getByTestId('toast').getByText(/e2e-libs:2 is in use/).waitFor();
  });
  await versions.locator('[data-testid="layer-version"][data-version="1"]').getByRole('button', { name: 'Delete' }).click();
  await versions.getByRole('button', { name: 'Delete e2e-libs:1' }).click();
  await page.getByTestId('toast').getByText('Deleted e2e-libs:1').waitFor();
  await versions.locator('[data-testid="layer-version"][data-version="1"]').waitFor({ state: 'detached' });
  await versions.locator('[data-testid="layer-version"][data-version="2"]').waitFor();
});

step('390 px wide: the package page has no sideways scroll', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  p.setDefaultTimeout(STEP_TIMEOUT);
  watch(p, 'phone');
  await p.goto(base + '/login');
  await p.getByLabel('Email').fill(EMAIL);
  await p.getByLabel('Password').fill(PASSWORD);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(/\/functions$/);
  await p.goto(`${base}/functions/${zipFnId}`);
  await p.getByTestId('package-card').getByTestId('tree-file').first().waitFor();
  await p.locator('[data-testid="file-editor"] .monaco-editor').waitFor();
  const w = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(w <= 390, `the page is ${w}px wide`);
  await shot(p, 'mobile-package');
  await phone.close();
});
