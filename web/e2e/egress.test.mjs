// End-to-end test of the function form's network egress field (SPEC §11): the real
// `voltrun serve` binary (namespace sandbox, a fresh data dir, port 0) driven through Debian's
// Chromium by playwright-core. Each bad list shows the form's own message while typing, then
// the server's 400 beside the field after saving, and the two say the same thing word for word;
// a good list is stored canonical and shown on the function's page; clearing it saves no
// network. Screenshots go to e2e/screenshots/ (gitignored).
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
const STEP_TIMEOUT = 30_000;

const EMAIL = `egress-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery';

let server; // { child, urls, log } from harness.mjs
let base;
let dataDir;
let browser;
let page;
let fnUrl;
const problems = []; // console errors other than the 400s the steps cause, and page errors

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  buildVoltrun();
  dataDir = mkdtempSync(path.join(tmpdir(), 'voltrun-e2e-egress-'));
  server = await startServer(dataDir);
  [base] = server.urls;
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 400/.test(m.text())) problems.push(`console.error: ${m.text()}`);
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

async function shot(name) {
  await page.waitForTimeout(250); // let transitions settle
  await page.addStyleTag({ content: '.toasts { display: none !important; }' });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** The function as the API has it (outside the browser, with the user's own token). */
async function stored(id) {
  const login = await fetch(`${base}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  });
  assert.equal(login.status, 200);
  const { token } = await login.json();
  const r = await fetch(`${base}/api/functions/${id}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200);
  return r.json();
}

const egress = () => page.locator('#f-egress');
const message = (from) => page.locator(`#f-egress-err[data-from="${from}"]`);

step('register and open the new-function form', async () => {
  await page.goto(base + '/register');
  await page.getByLabel('Name').fill('Egress Tester');
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByLabel('Password').press('Enter');
  await page.waitForURL(/\/functions$/);
  await page.getByRole('link', { name: 'New function' }).click();
  await page.waitForURL(/\/functions\/new$/);
  await page.getByLabel('Name').fill('egress-e2e');
  // No network by default: the field is empty and says so.
  assert.equal(await egress().inputValue(), '');
  assert.match(await page.locator('#f-egress-hint').innerText(), /Empty: no network/);
});

const many = Array.from({ length: 65 }, (_, i) => `198.18.0.${i}`).join('\n');
const BAD = [
  ['198.18.0.0/33', 'egress: entry "198.18.0.0/33": prefix length "33" must be 0 to 32'],
  ['198.18.0.0/24\n198.18.0.1/24', 'egress: entry "198.18.0.1/24": host bits set: did you mean 198.18.0.0/24?'],
  ['2001:db8::1/32', 'egress: entry "2001:db8::1/32": host bits set: did you mean 2001:db8::/32?'],
  ['300.1.1.1/8', 'egress: entry "300.1.1.1/8": "300.1.1.1" is not an IPv4 or IPv6 address'],
  ['api.example.com:0', 'egress: entry "api.example.com:0": port "0" is not a number from 1 to 65535'],
  ['api.example.com:65536', 'egress: entry "api.example.com:65536": port "65536" is not a number from 1 to 65535'],
  ['api.example.com:http', 'egress: entry "api.example.com:http": port "http" is not a number from 1 to 65535'],
  ['exa_mple.com', `egress: entry "exa_mple.com": host name label "exa_mple" may hold only letters, digits and '-'`],
  ['foo.*.com', `egress: entry "foo.*.com": a wildcard is allowed only as a leading '*.'`],
  ['a..com', 'egress: entry "a..com": host name with an empty label'],
  ['10.0.0', 'egress: entry "10.0.0": not a valid address, CIDR or host name'],
  ['[2001:db8::/32', `egress: entry "[2001:db8::/32": an opening '[' without ']'`],
  [many, 'egress: at most 64 entries (got 65)'],
];

for (const [text, expected] of BAD) {
  step(`bad egress ${JSON.stringify(text.slice(0, 30))}: the form's message, then the server's, alike`, async () => {
    await egress().fill(text);
    // While typing: the form's own check, in the server's words.
    assert.equal(await message('client').innerText(), expected);
    assert.equal(await egress().getAttribute('aria-invalid'), 'true');
    await page.getByRole('button', { name: 'Create function' }).first().click();
    // After saving: the server's 400, beside the field, the field focused.
    await message('server').waitFor();
    assert.equal(await message('server').innerText(), expected);
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'f-egress');
    assert.match(page.url(), /\/functions\/new$/, 'nothing was created');
    if (text === '198.18.0.0/33') await shot('egress-validation');
  });
}

step('a good list is saved canonical and shown on the function page', async () => {
  await egress().fill('198.18.0.7\n  API.Example.com:443  \n\n*.svc.test\n[2001:db8::/32]:443\npublic');
  await message('client').waitFor({ state: 'detached' });
  assert.equal(await egress().getAttribute('aria-invalid'), null);
  await page.getByRole('button', { name: 'Create function' }).first().click();
  await page.waitForURL(/\/functions\/fn_[^/]+$/);
  fnUrl = page.url();
  const canonical = ['198.18.0.7/32', 'api.example.com:443', '*.svc.test', '[2001:db8::/32]:443', 'public'];
  await page.locator('#fn-egress code').first().waitFor();
  const shown = await page.locator('#fn-egress code').allInnerTexts();
  assert.deepEqual(shown, canonical);
  const f = await stored(fnUrl.split('/').pop());
  assert.deepEqual(f.egress, canonical);
  assert.equal(f.version, 1);
  await shot('egress-function-page');
});

step('the edit form holds the list; a bad edit shows the server 400; clearing it saves no network', async () => {
  await page.getByRole('link', { name: 'Edit' }).click();
  await page.waitForURL(/\/edit$/);
  assert.equal(await egress().inputValue(), '198.18.0.7/32\napi.example.com:443\n*.svc.test\n[2001:db8::/32]:443\npublic');
  await egress().fill('198.18.0.0/24:99999');
  const expected = 'egress: entry "198.18.0.0/24:99999": port "99999" is not a number from 1 to 65535';
  assert.equal(await message('client').innerText(), expected);
  await page.getByRole('button', { name: 'Save changes' }).first().click();
  await message('server').waitFor();
  assert.equal(await message('server').innerText(), expected);
  assert.equal((await stored(fnUrl.split('/').pop())).version, 1, 'a refused update changes nothing');

  await egress().fill('');
  await page.getByRole('button', { name: 'Save changes' }).first().click();
  await page.waitForURL(fnUrl);
  await page.locator('#fn-egress').getByText('none (no network)').waitFor();
  const f = await stored(fnUrl.split('/').pop());
  assert.deepEqual(f.egress, []);
  assert.equal(f.version, 2);
});
