'use strict';
// VoltRun Node.js runtime bootstrap (Node 20, CommonJS, no dependencies).
//
// Started by the engine as `node bootstrap.js` with cwd = the function's code directory
// (/var/task where the instance is isolated) and
// fd 0 = /dev/null, fd 1 = fd 2 = the log pipe, fd 3 = control in, fd 4 = control out.
// Every control message is a 4-byte big-endian length followed by a UTF-8 JSON object.
// See docs/RUNTIME_PROTOCOL.md for the full protocol.
//
// Control I/O is synchronous on purpose: while the bootstrap waits for the next invoke frame the
// event loop is blocked, so the instance is "frozen" between runs as on Lambda.
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { pathToFileURL } = require('url');
const { Writable } = require('stream');

const CTL_IN = 3;
const CTL_OUT = 4;
const LOG_FD = 1;
// The function's code shares the fs module: it may wrap or replace its functions (to read
// what the bootstrap writes, or to swallow it). The bootstrap keeps its own references.
const { writeSync, readSync, readdirSync } = fs;

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function pause() { Atomics.wait(sleepCell, 0, 0, 2); }

// Node puts the stdout pipe in O_NONBLOCK mode, and that flag is shared by every fd on the same
// pipe description, so EAGAIN is possible on any of our fds: wait a little and retry.
function retrying(op) {
  for (;;) {
    try { return op(); } catch (err) { if (err.code !== 'EAGAIN') throw err; pause(); }
  }
}

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) off += retrying(() => writeSync(fd, buf, off, buf.length - off));
}

function readExact(fd, n) {
  const buf = Buffer.allocUnsafe(n);
  let off = 0;
  while (off < n) {
    const got = retrying(() => readSync(fd, buf, off, n - off, null));
    if (got === 0) return null;
    off += got;
  }
  return buf;
}

// Next message from the engine; exits quietly on EOF (the engine is done with us).
function readFrame() {
  const header = readExact(CTL_IN, 4);
  const body = header && readExact(CTL_IN, header.readUInt32BE(0));
  if (body === null) process.exit(0);
  try {
    const msg = JSON.parse(body.toString('utf8'));
    if (msg && typeof msg === 'object' && !Array.isArray(msg)) return msg;
  } catch (_) { /* fall through */ }
  process.exit(2); // the stream is desynchronised: nothing sensible left to do
}

// json: an already-serialised JSON object.
function sendFrame(json) {
  const body = Buffer.from(json, 'utf8');
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(body.length, 0);
  writeAll(CTL_OUT, Buffer.concat([header, body]));
}

// process.stdout/stderr queue writes in memory when the pipe is full; a write callback fires once
// everything queued before it has reached the pipe. The prototype's write is used because user code
// (logging libraries) may have replaced stream.write with something that never calls back.
function flushStream(stream) {
  return new Promise((resolve) => {
    try {
      if (stream.destroyed || stream.writableEnded) return resolve();
      Writable.prototype.write.call(stream, '', () => resolve());
    } catch (_) { resolve(); }
  });
}

async function endOfLogs(marker) {
  await Promise.all([flushStream(process.stdout), flushStream(process.stderr)]);
  writeAll(LOG_FD, Buffer.from(marker, 'utf8'));
}

function errorInfo(type, err) {
  try { return describe(type, err); } catch (_) { return { type, message: 'unprintable error value', stack: '' }; }
}

function describe(type, err) {
  if (err instanceof Error || (err && typeof err.message === 'string' && typeof err.stack === 'string')) {
    const name = String(err.name || 'Error');
    return { type, message: err.message ? `${name}: ${err.message}` : name, stack: String(err.stack || '') };
  }
  let message;
  try { message = typeof err === 'string' ? err : JSON.stringify(err); } catch (_) { /* BigInt, cycle */ }
  return { type, message: message === undefined ? String(err) : message, stack: '' };
}

// The `context` argument, as in AWS Lambda's Node runtime.
function makeContext(init, requestId, timeoutMs, logStreamName) {
  const deadline = performance.now() + timeoutMs;
  const name = String(init.function_name || '');
  return {
    functionName: name,
    functionVersion: String(init.function_version ?? ''),
    awsRequestId: requestId,
    memoryLimitInMB: String(init.memory_limit_in_mb ?? ''),
    invokedFunctionArn: `arn:voltrun:lambda:local:000000000000:function:${name}`,
    logGroupName: `/voltrun/${name}`,
    logStreamName,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, Math.floor(deadline - performance.now())),
  };
}

// Errors of require() that mean "this file is an ES module": load it with import() instead.
function isEsmError(err) {
  if (!err) return false;
  if (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE') return true;
  return err.name === 'SyntaxError' && /Cannot use import statement outside a module|Unexpected token 'export'|Cannot use 'import\.meta' outside a module/.test(err.message);
}

function moduleName(entry) { return path.basename(entry, path.extname(entry)); }

// A package's module file: `<task root>/<module>.js`, `.mjs` or `.cjs`, the first that
// exists (Lambda's order). The dependencies are `<task root>/node_modules` (a link to the
// dependency tree), found by require and import alike; layers by NODE_PATH.
function packageEntry(taskRoot, module) {
  for (const ext of ['.js', '.mjs', '.cjs']) {
    const file = path.join(taskRoot, module + ext);
    try { if (fs.statSync(file).isFile()) return file; } catch (_) { /* next */ }
  }
  throw Object.assign(new Error(`Cannot find module '${module}' (${module}.js, ${module}.mjs or ${module}.cjs) in ${taskRoot}`), { code: 'MODULE_NOT_FOUND' });
}

async function loadHandler(entry, name) {
  let mod;
  try {
    mod = require(entry);
  } catch (err) {
    if (!isEsmError(err)) throw err;
    // Node 20.20 detects module syntax when import()ing a .js file, so the file is loaded in place
    // (relative imports and import.meta.url keep working) and nothing is written to the code dir.
    mod = await import(pathToFileURL(entry).href);
  }
  const fn = mod != null ? mod[name] : undefined;
  if (typeof fn === 'function') return fn;
  if (typeof mod === 'function' && name === 'handler') return mod;
  const module = moduleName(entry);
  throw Object.assign(new Error(fn === undefined
    ? `Handler '${name}' missing on module '${module}'`
    : `Handler '${name}' on module '${module}' is not a function`), { noStack: true });
}

// Errors that escape the handler's own promise chain. During a run they fail that run.
let failCurrent = null;
function onStray(label) {
  return (err) => {
    if (failCurrent) return failCurrent(err);
    const info = errorInfo('', err);
    try { process.stderr.write(`${label}: ${info.stack || info.message}\n`); } catch (_) { /* ignore */ }
  };
}
process.on('uncaughtException', onStray('Uncaught exception'));
process.on('unhandledRejection', onStray('Unhandled rejection'));

// Calls the handler; resolves with {ok, value}: its return value or what it threw/rejected/called
// back with. Whichever of the returned promise and the callback settles first wins.
function callHandler(handler, event, context) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (ok, value) => {
      if (settled) return;
      settled = true;
      failCurrent = null;
      resolve({ ok, value });
    };
    const callback = (err, value) => (err === undefined || err === null ? settle(true, value) : settle(false, err));
    context.done = callback;
    context.succeed = (value) => settle(true, value);
    context.fail = (err) => settle(false, err ?? new Error('handler failed'));
    failCurrent = (err) => settle(false, err);
    try {
      const ret = handler(event, context, callback);
      if (ret && typeof ret.then === 'function') {
        ret.then((v) => settle(true, v), (e) => settle(false, e));
      } else if (handler.length < 3) {
        settle(true, ret); // plain return value; callback-style handlers wait for the callback
      }
    } catch (err) {
      settle(false, err);
    }
  });
}

async function run(handler, event, context) {
  const { ok, value } = await callHandler(handler, event, context);
  if (!ok) return JSON.stringify({ type: 'result', ok: false, error: errorInfo('HandlerError', value) });
  let output;
  try {
    output = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    const error = { type: 'RuntimeError', message: `handler result is not JSON serializable: ${err.name}: ${err.message}`, stack: '' };
    return JSON.stringify({ type: 'result', ok: false, error });
  }
  // A function or symbol result serialises to undefined, as in Lambda it becomes null.
  return `{"type":"result","ok":true,"output":${output === undefined ? 'null' : output}}`;
}

// True when a process other than this one lives in the sandbox (its own pid namespace): asked
// for by the gVisor tier, whose host cannot see the function's processes.
function otherProcesses() {
  try {
    return readdirSync('/proc').some((d) => /^[0-9]+$/.test(d) && Number(d) !== process.pid);
  } catch (_) {
    return true;
  }
}

// Things a run can leave behind that run the function's code later, and so print into a later
// run: pending timers and immediates, child processes (process.getActiveResourcesInfo() names
// them), and worker threads (counted here: they are not among the active resources).
const LINGERING = new Set(['Timeout', 'Immediate', 'ProcessWrap']);
let liveWorkers = 0;
{
  const wt = require('worker_threads');
  const Base = wt.Worker;
  wt.Worker = class Worker extends Base {
    constructor(...args) {
      super(...args);
      liveWorkers++;
      this.once('exit', () => { liveWorkers--; });
    }
  };
}
const activeResources = process.getActiveResourcesInfo.bind(process); // the function may replace it
function lingeringCount() {
  let n = liveWorkers;
  for (const r of activeResources()) if (LINGERING.has(r)) n++;
  return n;
}

async function main() {
  // A spare (started before its function is known) says when it is up, so the engine
  // hands out only spares whose interpreter has finished starting.
  if (process.env.VOLTRUN_SPARE === '1') {
    delete process.env.VOLTRUN_SPARE;
    sendFrame('{"type":"started"}');
  }
  const init = readFrame();
  if (init.type !== 'init') process.exit(2);
  const marker = String(init.marker); // only for init_error: each run brings a marker of its own
  // A pre-started instance learns its function's environment here, before the code loads.
  for (const [k, v] of Object.entries(init.env || {})) process.env[k] = String(v);
  let handler;
  const shownModule = init.module || moduleName(init.entry);
  try {
    const entry = init.module ? packageEntry(init.entry, init.module) : init.entry;
    handler = await loadHandler(entry, init.handler || 'handler');
  } catch (err) {
    const error = errorInfo('RuntimeError', err);
    if (err && err.noStack) Object.assign(error, { message: err.message, stack: '' });
    else error.message = `Unable to load module '${shownModule}': ${error.message}`;
    await endOfLogs(marker);
    sendFrame(JSON.stringify({ type: 'init_error', error }));
    process.exit(1);
  }
  const day = new Date().toISOString().slice(0, 10).replace(/-/g, '/');
  const logStream = `${day}/[${init.function_version ?? ''}]${crypto.randomBytes(16).toString('hex')}`;
  // Let errors left behind by module-level code surface now (printed), not in the first run.
  await new Promise((resolve) => setImmediate(resolve));
  // What module-level code left running (intervals, servers) is the instance's own, not a run's.
  let baseline = lingeringCount();
  sendFrame('{"type":"ready"}');
  const reportStrays = init.report_strays === true;

  for (;;) {
    const msg = readFrame();
    if (msg.type !== 'invoke' || typeof msg.marker !== 'string' || typeof msg.request_id !== 'string') process.exit(2);
    // The deadline starts when the invoke frame is read.
    const context = makeContext(init, msg.request_id, Number(msg.timeout_ms) || 0, logStream);
    let frame = (await run(handler, msg.event, context)).slice(0, -1) + `,"request_id":${JSON.stringify(msg.request_id)}`;
    // A child awaited to its 'exit' still lists its handle for a turn or two of the loop: give
    // it those turns before calling anything left a stray (only when something is left).
    let left = lingeringCount();
    for (let i = 0; i < 3 && left > baseline; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      left = lingeringCount();
    }
    if (left > baseline || (reportStrays && otherProcesses())) frame += ',"strays":true';
    // What the instance itself ran (module-level timers, workers) may end: the baseline
    // follows it down, so a run cannot hide a timer of its own behind one that ended.
    else baseline = left;
    await endOfLogs(msg.marker);
    sendFrame(`${frame}}`);
  }
}

main().catch((err) => {
  // Only a bug in the bootstrap itself gets here; the engine sees the instance die.
  try { writeSync(2, `voltrun bootstrap: ${err && err.stack}\n`); } catch (_) { /* ignore */ }
  process.exit(3);
});
