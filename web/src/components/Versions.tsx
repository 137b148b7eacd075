// A function's versions and aliases (SPEC §13, issue 16).
//
// Versions: the immutable snapshots, newest first, with the aliases pointing at each; a
// version's code opens read-only in Monaco, two versions' code side by side in a diff; a
// delete the API refuses (the latest, or one an alias uses: 409) shows the API's message.
//
// Aliases: create one on a version; per alias, change its version (one click rolls back to the
// version before), a canary (one extra version and its weight, by slider or number), a route
// bound to the alias or unbound, and delete. Every change is one PUT with only what changed.
import { lazy, Suspense, useEffect, useMemo, useState, type FormEvent } from 'react';
import { api, ApiError, get, type Alias, type Fn, type FnVersion } from '../api';
import { itemsOf } from './LayersPicker';
import { ConfirmButton, Drawer, ErrorBox, Spinner, useLoad } from './ui';
import { ago } from '../format';
import { useToast } from '../toast';

const CodeEditor = lazy(() => import('./CodeEditor'));
const CodeDiff = lazy(() => import('./CodeDiff'));

const fnPath = (fn: Fn) => `/api/functions/${encodeURIComponent(fn.id)}`;

/** Every version of the function, all pages (at most 20 pages of 100). */
async function allVersions(fn: Fn, signal: AbortSignal): Promise<FnVersion[]> {
  const out: FnVersion[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 20; i++) {
    const r: { items: FnVersion[]; next_cursor?: string | null } | FnVersion[] = await get(`${fnPath(fn)}/versions?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, signal);
    out.push(...itemsOf(r));
    cursor = Array.isArray(r) ? null : (r.next_cursor ?? null);
    if (!cursor) break;
  }
  return out;
}

const languageOf = (v: { runtime: string }) => (v.runtime.startsWith('python') ? 'python' : 'javascript');

export function VersionsPanel({ fn, tick, onChanged }: { fn: Fn; tick: number; onChanged: () => void }) {
  const toast = useToast();
  const versions = useLoad((s) => allVersions(fn, s), [fn.id, fn.version, tick]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const [open, setOpen] = useState<number | null>(null);
  const [diff, setDiff] = useState<[string, string]>(['', '']);
  const items = versions.data ?? [];
  const latest = items.length ? Math.max(...items.map((v) => v.version)) : fn.version;

  const remove = async (n: number) => {
    setBusy(n);
    setError(null);
    try {
      await api('DELETE', `${fnPath(fn)}/versions/${n}`);
      toast('success', `Deleted version ${n}`);
      versions.reload();
      onChanged();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  };

  return (
    <section className="card table-card" aria-labelledby="versions-title" data-testid="versions-panel">
      <div className="card-head">
        <h2 className="card-title" id="versions-title">
          Versions
        </h2>
        <span className="muted small">Every change of code or configuration is a new version; old ones stay invokable as {fn.name}:N.</span>
      </div>
      <div role="alert" data-testid="versions-error">
        <ErrorBox error={error} />
      </div>
      {versions.error ? (
        <ErrorBox error={versions.error} retry={versions.reload} />
      ) : versions.loading && items.length === 0 ? (
        <Spinner />
      ) : items.length === 0 ? (
        <div className="muted placeholder">No versions listed.</div>
      ) : (
        <div className="table-scroll">
          <table className="table" data-testid="versions-table">
            <thead>
              <tr>
                <th>Version</th>
                <th>State</th>
                <th className="hide-sm">Code</th>
                <th>Aliases</th>
                <th>Created</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {items.map((v) => (
                <tr key={v.version} data-version={v.version}>
                  <td className="strong">
                    v{v.version}
                    {v.version === latest && <span className="badge badge-none"> latest</span>}
                  </td>
                  <td>{v.state}</td>
                  <td className="hide-sm">
                    <code className="muted">{(v.package_sha256 ?? v.code_sha256 ?? '').slice(0, 12) || '—'}</code>
                    {v.package_sha256 ? <span className="muted small"> package</span> : null}
                  </td>
                  <td>
                    {v.aliases?.length
                      ? v.aliases.map((a) => (
                          <code key={a} className="egress-entry">
                            {a}
                          </code>
                        ))
                      : '—'}
                  </td>
                  <td className="muted nowrap" title={v.created_at}>
                    {ago(v.created_at)}
                  </td>
                  <td className="nowrap">
                    <button type="button" className="btn btn-small" onClick={() => setOpen(v.version)} aria-label={`View version ${v.version}`}>
                      View
                    </button>{' '}
                    <ConfirmButton small label="Delete" confirmLabel={`Delete v${v.version}`} busy={busy === v.version} onConfirm={() => void remove(v.version)} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {items.length >= 2 && <Diff fn={fn} versions={items} pick={diff} setPick={setDiff} />}
      {open !== null && (
        <Drawer title={`${fn.name} version ${open}`} onClose={() => setOpen(null)}>
          <VersionView fn={fn} n={open} />
        </Drawer>
      )}
    </section>
  );
}

function VersionView({ fn, n }: { fn: Fn; n: number }) {
  const v = useLoad((s) => get<FnVersion>(`${fnPath(fn)}/versions/${n}`, s), [fn.id, n]);
  if (v.error) return <ErrorBox error={v.error} retry={v.reload} />;
  if (!v.data) return <Spinner />;
  const d = v.data;
  return (
    <div data-testid="version-view">
      <dl className="meta-grid">
        <div>
          <dt>Runtime</dt>
          <dd>{d.runtime}</dd>
        </div>
        <div>
          <dt>Handler</dt>
          <dd>
            <code>{d.handler}</code>
          </dd>
        </div>
        <div>
          <dt>Memory</dt>
          <dd>{d.memory} MiB</dd>
        </div>
        <div>
          <dt>Timeout</dt>
          <dd>{d.timeout} s</dd>
        </div>
        <div>
          <dt>Environment</dt>
          <dd>{Object.keys(d.env ?? {}).join(', ') || '—'}</dd>
        </div>
        <div>
          <dt>Secrets</dt>
          <dd>{d.secrets?.join(', ') || '—'}</dd>
        </div>
        <div>
          <dt>Layers</dt>
          <dd>{d.layers?.join(', ') || '—'}</dd>
        </div>
        <div>
          <dt>State</dt>
          <dd>{d.state}</dd>
        </div>
      </dl>
      {typeof d.code === 'string' ? (
        <Suspense fallback={<div className="editor-loading" style={{ height: 360 }}>Loading editor…</div>}>
          <CodeEditor testId="version-code" label={`Code of version ${n} (read-only)`} language={languageOf(d)} value={d.code} onChange={() => {}} height={360} readOnly />
        </Suspense>
      ) : (
        <p className="muted">A package (sha256 {d.package_sha256 ?? '?'}): its files are not shown per version.</p>
      )}
    </div>
  );
}

function Diff({ fn, versions, pick, setPick }: { fn: Fn; versions: FnVersion[]; pick: [string, string]; setPick: (p: [string, string]) => void }) {
  const [a, b] = pick;
  const left = useLoad((s) => (a ? get<FnVersion>(`${fnPath(fn)}/versions/${a}`, s) : Promise.resolve(null)), [fn.id, a]);
  const right = useLoad((s) => (b ? get<FnVersion>(`${fnPath(fn)}/versions/${b}`, s) : Promise.resolve(null)), [fn.id, b]);
  const opts = versions.map((v) => (
    <option key={v.version} value={v.version}>
      v{v.version}
    </option>
  ));
  return (
    <div className="version-diff" data-testid="version-diff">
      <div className="layer-add">
        <span className="label">Compare code</span>
        <select aria-label="Older version" value={a} onChange={(e) => setPick([e.target.value, b])}>
          <option value="">from…</option>
          {opts}
        </select>
        <select aria-label="Newer version" value={b} onChange={(e) => setPick([a, e.target.value])}>
          <option value="">to…</option>
          {opts}
        </select>
      </div>
      {left.error || right.error ? <ErrorBox error={left.error ?? right.error} /> : null}
      {left.data && right.data && (
        <Suspense fallback={<div className="editor-loading" style={{ height: 300 }}>Loading editor…</div>}>
          <CodeDiff
            original={left.data.code ?? `(a package, sha256 ${left.data.package_sha256 ?? '?'})`}
            modified={right.data.code ?? `(a package, sha256 ${right.data.package_sha256 ?? '?'})`}
            language={languageOf(right.data)}
            height={300}
            label={`Code of v${a} against v${b}`}
          />
        </Suspense>
      )}
    </div>
  );
}

/** The alias's one weighted extra version, if any. */
function canaryOf(a: Alias): { version: string; weight: number } | null {
  const e = Object.entries(a.weights ?? {})[0];
  return e ? { version: e[0], weight: e[1] } : null;
}

export function AliasesPanel({ fn, onChanged }: { fn: Fn; onChanged: () => void }) {
  const toast = useToast();
  const aliases = useLoad((s) => get<{ items: Alias[] } | Alias[]>(`${fnPath(fn)}/aliases`, s).then(itemsOf), [fn.id]);
  const versions = useLoad((s) => allVersions(fn, s), [fn.id, fn.version]);
  const [name, setName] = useState('');
  const [version, setVersion] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const nums = useMemo(() => (versions.data ?? []).map((v) => v.version).sort((x, y) => y - x), [versions.data]);
  useEffect(() => {
    if (!version && nums.length) setVersion(String(nums[0]));
  }, [nums, version]);
  const field = error instanceof ApiError ? error.field : null;

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const a = await api<Alias>('POST', `${fnPath(fn)}/aliases`, { body: { name: name.trim(), version: Number(version) } });
      toast('success', `Created alias ${a.name} → v${a.version}`);
      setName('');
      aliases.reload();
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const changed = () => {
    aliases.reload();
    onChanged();
  };

  return (
    <section className="card" aria-labelledby="aliases-title" data-testid="aliases-panel">
      <h2 className="card-title" id="aliases-title">
        Aliases
      </h2>
      <p className="muted small">
        An alias names a version: call it as {fn.name}:ALIAS, or bind it a route. Pointing it at an older version is a rollback.
      </p>
      {aliases.error ? (
        <ErrorBox error={aliases.error} retry={aliases.reload} />
      ) : aliases.loading && !aliases.data ? (
        <Spinner />
      ) : (aliases.data ?? []).length === 0 ? (
        <div className="muted small">No aliases.</div>
      ) : (
        <div className="alias-list">
          {(aliases.data ?? []).map((a) => (
            <AliasRow key={`${a.name}-${a.updated_at}`} fn={fn} alias={a} versions={nums} onChanged={changed} />
          ))}
        </div>
      )}
      <form className="layer-add alias-create" onSubmit={create} noValidate>
        <input id="alias-name" aria-label="New alias name" placeholder="live" value={name} onChange={(e) => setName(e.target.value)} spellCheck={false} autoComplete="off" aria-invalid={field === 'name' ? true : undefined} />
        <select id="alias-version" aria-label="New alias version" value={version} onChange={(e) => setVersion(e.target.value)}>
          {nums.map((n) => (
            <option key={n} value={n}>
              v{n}
            </option>
          ))}
        </select>
        <button type="submit" className="btn btn-small" disabled={busy || !name.trim() || !version}>
          Create alias
        </button>
      </form>
      <div data-testid="alias-create-error">
        <ErrorBox error={error} />
      </div>
    </section>
  );
}

function AliasRow({ fn, alias, versions, onChanged }: { fn: Fn; alias: Alias; versions: number[]; onChanged: () => void }) {
  const toast = useToast();
  const canary = canaryOf(alias);
  const [version, setVersion] = useState(String(alias.version));
  const [extra, setExtra] = useState(canary?.version ?? '');
  const [weight, setWeight] = useState(String(canary?.weight ?? 0.1));
  const [route, setRoute] = useState(alias.route ?? '');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const path = `${fnPath(fn)}/aliases/${encodeURIComponent(alias.name)}`;
  const field = error instanceof ApiError ? error.field : null;
  // The newest version older than the one the alias points at: what "Roll back" goes to.
  const previous = versions.find((n) => n < alias.version);

  const put = async (body: Record<string, unknown>, done: string) => {
    setBusy(true);
    setError(null);
    try {
      await api<Alias>('PUT', path, { body });
      toast('success', done);
      onChanged();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const save = () => {
    const body: Record<string, unknown> = {};
    if (Number(version) !== alias.version) body.version = Number(version);
    const w = Number(weight);
    const next = extra ? { [extra]: Number.isFinite(w) ? w : weight } : null;
    if (JSON.stringify(next) !== JSON.stringify(canary ? { [canary.version]: canary.weight } : null)) body.weights = next;
    const r = route.trim() || null;
    if (r !== (alias.route ?? null)) body.route = r;
    if (Object.keys(body).length === 0) return;
    void put(body, `Saved alias ${alias.name}`);
  };
  const remove = async () => {
    setBusy(true);
    setError(null);
    try {
      await api('DELETE', path);
      toast('success', `Deleted alias ${alias.name}`);
      onChanged();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const share = Math.round(Number(weight) * 1000) / 10;

  return (
    <div className="alias-row card-inner" data-testid="alias-row" data-alias={alias.name}>
      <div className="alias-head">
        <strong>
          {fn.name}:{alias.name}
        </strong>{' '}
        <span className="muted" data-testid="alias-target">
          → v{alias.version}
          {canary ? ` (${Math.round((1 - canary.weight) * 1000) / 10}%) + v${canary.version} (${Math.round(canary.weight * 1000) / 10}%)` : ''}
        </span>
        {alias.route && (
          <>
            {' '}
            <code className="egress-entry" data-testid="alias-route">
              /api/execute/{alias.route}
            </code>
          </>
        )}
        <span className="alias-actions">
          {previous !== undefined && (
            <button type="button" className="btn btn-small" disabled={busy} onClick={() => void put({ version: previous }, `Rolled ${alias.name} back to v${previous}`)}>
              Roll back to v{previous}
            </button>
          )}{' '}
          <ConfirmButton small label="Delete" confirmLabel={`Delete ${alias.name}`} busy={busy} onConfirm={() => void remove()} />
        </span>
      </div>
      <div className="grid-3">
        <div className="field">
          <label htmlFor={`alias-${alias.name}-version`}>Version</label>
          <select id={`alias-${alias.name}-version`} value={version} onChange={(e) => setVersion(e.target.value)} aria-invalid={field === 'version' ? true : undefined}>
            {!versions.includes(alias.version) && <option value={alias.version}>v{alias.version}</option>}
            {versions.map((n) => (
              <option key={n} value={n}>
                v{n}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={`alias-${alias.name}-extra`}>Canary version</label>
          <select id={`alias-${alias.name}-extra`} value={extra} onChange={(e) => setExtra(e.target.value)} aria-invalid={field === 'weights' ? true : undefined}>
            <option value="">none</option>
            {versions
              .filter((n) => String(n) !== version)
              .map((n) => (
                <option key={n} value={n}>
                  v{n}
                </option>
              ))}
          </select>
          {extra && (
            <div className="weight">
              <input
                type="range"
                min={0.01}
                max={0.99}
                step={0.01}
                aria-label={`Canary weight of ${alias.name}`}
                value={Number.isFinite(Number(weight)) ? Number(weight) : 0.1}
                onChange={(e) => setWeight(e.target.value)}
              />
              <input
                id={`alias-${alias.name}-weight`}
                type="number"
                min={0}
                max={1}
                step={0.01}
                aria-label={`Canary weight number of ${alias.name}`}
                value={weight}
                onChange={(e) => setWeight(e.target.value)}
                aria-invalid={field === 'weights' ? true : undefined}
              />
              <span className="muted small">{Number.isFinite(share) ? `${share}% of calls` : ''}</span>
            </div>
          )}
        </div>
        <div className="field">
          <label htmlFor={`alias-${alias.name}-route`}>Route</label>
          <div className="input-prefix">
            <span>/api/execute/</span>
            <input id={`alias-${alias.name}-route`} value={route} onChange={(e) => setRoute(e.target.value)} placeholder="none" spellCheck={false} aria-invalid={field === 'route' ? true : undefined} />
          </div>
          {alias.route && (
            <button type="button" className="btn btn-small" disabled={busy} onClick={() => void put({ route: null }, `Unbound the route of ${alias.name}`)}>
              Unbind route
            </button>
          )}
        </div>
      </div>
      <div className="alias-foot">
        <button type="button" className="btn btn-primary btn-small" disabled={busy} onClick={save}>
          Save {alias.name}
        </button>
      </div>
      <div data-testid="alias-error">
        <ErrorBox error={error} />
      </div>
    </div>
  );
}
