// The REST client: JSON in and out, the session, one refresh and one retry on a 401, the API's
// error JSON turned into ApiError, and the SSE log stream read with fetch (EventSource cannot
// send an Authorization header).
//
// The session keeps no token where another script on this origin could read it: the refresh
// token is an HttpOnly cookie the server sets (`X-VoltRun-Session: cookie`, Path=/api/auth),
// and the access token lives in this module's memory only. A page load restores the session
// by spending the cookie (POST /api/auth/refresh). Refresh tokens are single-use (presenting
// a spent one revokes the family), so tabs take turns: every refresh runs under a Web Lock
// shared by all tabs of the origin, and a tab refreshes only after the previous one's new
// cookie is stored. Logging in or out is told to the other tabs on a BroadcastChannel.

// The API's types are generated from the server's OpenAPI document (web/openapi.json, which
// `voltrun openapi` prints and a test keeps current) into ./api-types.ts by openapi-typescript
// at every build; these are the names the dashboard uses for them.
import type { components } from './api-types';

type Schemas = components['schemas'];

export type User = Schemas['UserView'];

export interface Session {
  token: string;
  user: User | null;
}

export type Runtime = Schemas['Runtime'];

/** What a package function's `package` says about its archive (null for a `code` function). */
export type PackageInfo = Schemas['PackageInfo'];

export type FnState = Schemas['FunctionState'];
export type UpdateStatus = Schemas['UpdateStatus'];

export type Fn = Schemas['Function'];

/** A function as `GET /api/functions` lists it: no code (the function's own GET has it), its size. */
export type FnSummary = Schemas['FunctionSummary'];

/** The latest dependency build of a function (`GET /api/functions/{id}/build`). */
export type Build = Schemas['Build'];

/** One version of a layer. */
export type Layer = Schemas['Layer'];

export type Status = Schemas['ExecutionStatus'];

export type ExecError = Schemas['ExecError'];

export type Execution = Schemas['Execution'];

export type ApiKey = Schemas['KeyView'];
export type Secret = Schemas['SecretView'];

/** One page of a list (`Paged_*` in the document, one schema per item type). */
export type Page<T> = Omit<Schemas['Paged_Execution'], 'items'> & { items: T[] };

export type HourBucket = Schemas['HourBucket'];

export type Dashboard = Schemas['Dashboard'];

export type RuntimeInfo = Schemas['RuntimeInfo'];

/** One immutable version of a function (SPEC §13, `GET /api/functions/{id}/versions`); `code`
 * only on `GET …/versions/{n}` of a single-file function. */
export type FnVersion = Schemas['Version'];

/** An alias of a function: a name for a version, with at most one weighted extra version
 * (`weights: {"<version>": share}` or null). */
export type Alias = Schemas['Alias'];

/** An error answered by the API (or a network failure, with status 0). */
export class ApiError extends Error {
  status: number;
  code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
  /** The field a validation message names ("memory: must be …" → "memory"). */
  get field(): string | null {
    if (this.code !== 'validation_failed' && this.code !== 'conflict') return null;
    const m = /^([a-z_]+)(?:\.[^:]*)?: /.exec(this.message);
    if (m) return m[1];
    const c = /^(name|route) is already taken/.exec(this.message);
    return c ? c[1] : null;
  }
}

/** Asks the server for the cookie session instead of a refresh token in the body. */
export const SESSION_HEADERS: Record<string, string> = { 'X-VoltRun-Session': 'cookie' };

let session: Session | null = null;
let ready = false;
const listeners = new Set<() => void>();
const channel: BroadcastChannel | null = typeof BroadcastChannel === 'function' ? new BroadcastChannel('voltrun.session') : null;

export function getSession(): Session | null {
  return session;
}

/** False until the first restore of the session (from the cookie) has answered. */
export function isSessionReady(): boolean {
  return ready;
}

function notify(): void {
  listeners.forEach((l) => l());
}

/** Sets the in-memory session; `announce` tells the other tabs (a login or a logout). */
export function setSession(s: Session | null, announce = false): void {
  session = s;
  notify();
  if (announce) channel?.postMessage(s ? 'login' : 'logout');
}

export function onSessionChange(l: () => void): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

// Another tab logged in: get a token of our own from the (shared) cookie. Logged out: the
// cookie's family is revoked; drop our token too.
channel?.addEventListener('message', (e) => {
  if (e.data === 'logout') setSession(null);
  else if (e.data === 'login' && !session) void refreshSession();
});

/** Runs `fn` while holding the origin-wide refresh lock (all tabs), when the browser has one. */
function exclusive<T>(fn: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  return locks ? (locks.request('voltrun.session.refresh', fn) as Promise<T>) : fn();
}

let refreshing: Promise<boolean> | null = null;

/**
 * Trades the refresh cookie for a new access token (and a rotated cookie), once at a time in
 * this tab and one tab at a time in the browser. False when there is no session.
 */
export function refreshSession(): Promise<boolean> {
  if (refreshing) return refreshing;
  refreshing = exclusive(async () => {
    try {
      const resp = await fetch('/api/auth/refresh', { method: 'POST', headers: SESSION_HEADERS, credentials: 'same-origin' });
      if (resp.status !== 200) return false;
      const body = await resp.json();
      setSession({ token: body.token, user: session?.user ?? null });
      return true;
    } catch {
      return false;
    }
  }).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** Ends the session everywhere: the server revokes the cookie's family and clears it. */
export async function logout(): Promise<void> {
  try {
    await fetch('/api/auth/logout', { method: 'POST', headers: SESSION_HEADERS, credentials: 'same-origin' });
  } catch {
    // Offline: the token is dropped from memory all the same.
  }
  setSession(null, true);
}

// Dashboards before the cookie session kept both tokens in localStorage: wipe them.
try {
  localStorage.removeItem('voltrun.session');
} catch {
  // Storage unavailable: nothing was stored there either.
}

// Restore the session of this page load from the cookie.
void refreshSession().then(() => {
  ready = true;
  notify();
});

async function errorFrom(resp: Response): Promise<ApiError> {
  let code = 'http_' + resp.status;
  let message = `${resp.status} ${resp.statusText || 'error'}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, code, message);
}

interface RequestOptions {
  body?: unknown;
  /** Send the body as this raw text (the JSON input editor's content) instead of JSON.stringify. */
  rawBody?: string;
  signal?: AbortSignal;
  auth?: boolean;
  accept?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

/** fetch with the session's token; on a 401, refreshes once and retries once. */
async function authedFetch(method: string, path: string, opts: RequestOptions): Promise<Response> {
  const send = () => {
    const headers: Record<string, string> = { Accept: opts.accept ?? 'application/json', ...opts.headers };
    if (opts.body !== undefined || opts.rawBody !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.auth !== false && session) headers.Authorization = `Bearer ${session.token}`;
    return fetch(path, {
      method,
      headers,
      body: opts.rawBody ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined),
      signal: opts.signal,
    });
  };
  let resp: Response;
  try {
    resp = await send();
    if (resp.status === 401 && opts.auth !== false && session) {
      if (await refreshSession()) {
        resp = await send();
      } else {
        setSession(null);
      }
    }
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', 'Cannot reach the VoltRun server. Is it running?');
  }
  return resp;
}

/** Calls the API and returns the parsed JSON (undefined for 204). Throws ApiError. */
export async function api<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const resp = await authedFetch(method, path, opts);
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

export const get = <T>(path: string, signal?: AbortSignal) => api<T>('GET', path, { signal });

/** GETs a binary body (a package zip) as bytes. Throws ApiError. */
export async function getBytes(path: string, signal?: AbortSignal, accept = 'application/zip'): Promise<Uint8Array> {
  const resp = await authedFetch('GET', path, { signal, accept });
  if (!resp.ok) throw await errorFrom(resp);
  return new Uint8Array(await resp.arrayBuffer());
}

/** Query string from the defined values. */
export function qs(params: Record<string, string | number | null | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
}

export interface FollowHandlers<End = { status: Status; logs_truncated: boolean }> {
  onLog: (text: string) => void;
  onEnd: (end: End) => void;
}

/**
 * Follows `GET /api/executions/{id}/logs?follow=true` (Server-Sent Events) until `end` or until
 * `signal` aborts. The first `log` event carries everything written so far.
 */
export function followLogs(id: string, h: FollowHandlers, signal: AbortSignal): Promise<void> {
  return followEvents(`/api/executions/${encodeURIComponent(id)}/logs?follow=true`, h, signal);
}

/**
 * Follows `GET /api/functions/{id}/build?follow=true`: the build's log as it is written, then
 * one `end` event with the finished build.
 */
export function followBuild(fnId: string, h: FollowHandlers<Build>, signal: AbortSignal): Promise<void> {
  return followEvents(`/api/functions/${encodeURIComponent(fnId)}/build?follow=true`, h, signal);
}

/** Reads an SSE stream of `log` events (`{"text"}`) closed by one `end` event. */
async function followEvents<End>(path: string, h: FollowHandlers<End>, signal: AbortSignal): Promise<void> {
  const resp = await authedFetch('GET', path, {
    signal,
    accept: 'text/event-stream',
  });
  if (!resp.ok) throw await errorFrom(resp);
  if (!resp.body) throw new ApiError(0, 'no_stream', 'The log stream has no body');
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  const dispatch = (block: string) => {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return false;
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(data.join('\n'));
    } catch {
      return false;
    }
    if (event === 'log' && typeof payload.text === 'string') h.onLog(payload.text);
    if (event === 'end') {
      h.onEnd(payload as unknown as End);
      return true;
    }
    return false;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (dispatch(block)) return;
      }
    }
    if (buf.trim()) dispatch(buf);
  } finally {
    reader.cancel().catch(() => {});
  }
}
