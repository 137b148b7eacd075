// What every e2e file needs around its steps: the voltrun binary (built with cargo unless
// VOLTRUN_BIN names one), a `voltrun serve` on port 0 whose listening lines give the URLs, its
// stop, and Debian's Chromium launched with the flags this machine's closed network needs.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const WEB = path.resolve(import.meta.dirname, '..');
export const ROOT = path.resolve(WEB, '..');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const SANDBOX = process.env.VOLTRUN_E2E_SANDBOX ?? 'namespace';

/** Builds target/debug/voltrun with cargo, unless VOLTRUN_BIN names a binary. */
export function buildVoltrun() {
  if (process.env.VOLTRUN_BIN) return;
  const r = spawnSync('cargo', ['build', '-p', 'voltrun'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  assert.equal(r.status, 0, 'cargo build -p voltrun failed');
}

/**
 * Starts `voltrun serve` on 127.0.0.1:0 with `dataDir` and `extraArgs`, and resolves once the
 * server has printed every line of `listening` (regexps with the URL as their first group):
 * `{ child, urls, log }`, `urls` in the order of `listening`, `log()` all it printed so far.
 */
export function startServer(dataDir, extraArgs = [], listening = [/voltrun listening on (http:\/\/\S+)/]) {
  return new Promise((resolve, reject) => {
    const bin = process.env.VOLTRUN_BIN ?? path.join(ROOT, 'target', 'debug', 'voltrun');
    const args = ['serve', '--listen', '127.0.0.1:0', ...extraArgs, '--data-dir', dataDir, '--sandbox', SANDBOX];
    if (SANDBOX === 'process') args.push('--insecure');
    const child = spawn(bin, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VOLTRUN_LOG: 'info' } });
    let serverLog = '';
    let started = false;
    const log = () => serverLog;
    const timer = setTimeout(() => reject(new Error(`voltrun did not start in 60 s:\n${serverLog}`)), 60_000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      serverLog += d;
      const found = listening.map((re) => re.exec(out));
      if (!started && found.every(Boolean)) {
        started = true;
        clearTimeout(timer);
        resolve({ child, urls: found.map((m) => m[1]), log });
      }
    });
    child.stderr.on('data', (d) => {
      serverLog += d;
    });
    child.on('exit', (code, sig) => {
      if (!started) {
        clearTimeout(timer);
        reject(new Error(`voltrun exited (${code ?? sig}) before listening:\n${serverLog}`));
      }
    });
  });
}

/** SIGTERM, and SIGKILL after 10 s if it has not exited. */
export async function stopServer(child) {
  if (!child || child.exitCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((r) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      r();
    }, 10_000);
    child.on('exit', () => {
      clearTimeout(t);
      r();
    });
  });
}

/** Debian's Chromium, headless, without the background connections this closed network refuses. */
export function launchChromium() {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh, empty user-data dir of its own.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}
