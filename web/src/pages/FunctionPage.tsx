// One function: its configuration and build state, its package's files (a tree beside
// Monaco, saved as a new zip) and latest dependency build, an invoke panel with a JSON input
// editor and the result (output, logs, duration, error), and the history of its executions.
import { lazy, Suspense, useCallback, useEffect, useState } from 'react';
import { api, ApiError, get, qs, type Execution, type Fn, type Page } from '../api';
import { BuildPanel } from '../components/BuildPanel';
import { ExecutionDetail } from '../components/ExecutionDetail';
import { ExecutionsTable } from '../components/ExecutionsTable';
import { PackageEditor } from '../components/PackageEditor';
import { AliasesPanel, VersionsPanel } from '../components/Versions';
import { ConfirmButton, Drawer, ErrorBox, Spinner, StateBadge, useLoad, usePageTitle } from '../components/ui';
import { ago, runtimeLabel } from '../format';
import { Link, navigate } from '../router';
import { useToast } from '../toast';

const CodeEditor = lazy(() => import('../components/CodeEditor'));

const HISTORY = 10;

export function FunctionPage({ id }: { id: string }) {
  const fn = useLoad((s) => get<Fn>(`/api/functions/${encodeURIComponent(id)}`, s), [id]);
  usePageTitle(fn.data?.name ?? 'Function');
  if (fn.error) {
    return (
      <div className="page">
        <div className="crumbs">
          <Link href="/functions">Functions</Link>
        </div>
        <ErrorBox error={fn.error} retry={fn.error instanceof ApiError && fn.error.status === 404 ? undefined : fn.reload} />
      </div>
    );
  }
  if (!fn.data) return <Spinner label="Loading function…" />;
  return <FunctionView fn={fn.data} reload={fn.reload} setFn={fn.setData} />;
}

function FunctionView({ fn, reload, setFn }: { fn: Fn; reload: () => void; setFn: (f: Fn) => void }) {
  const toast = useToast();
  const [deleting, setDeleting] = useState(false);
  const [historyTick, setHistoryTick] = useState(0);
  const [tab, setTab] = useState<'overview' | 'versions' | 'aliases'>('overview');
  const [versionsTick, setVersionsTick] = useState(0);

  const remove = async () => {
    setDeleting(true);
    try {
      await api('DELETE', `/api/functions/${encodeURIComponent(fn.id)}`);
      toast('success', `Deleted ${fn.name}`);
      navigate('/functions');
    } catch (e) {
      toast('error', e instanceof Error ? e.message : String(e));
      setDeleting(false);
    }
  };
  const triggerUrl = fn.route ? `${location.origin}/api/execute/${fn.route}` : null;

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <div className="crumbs">
            <Link href="/functions">Functions</Link>
          </div>
          <h1 className="fn-title">
            {fn.name}
            <span className={`runtime runtime-${fn.runtime.startsWith('python') ? 'py' : 'js'}`}>{runtimeLabel(fn.runtime)}</span>
            <span className="muted small">v{fn.version}</span>
            <StateBadge fn={fn} />
          </h1>
          {fn.description && <p className="muted">{fn.description}</p>}
          {fn.state === 'failed' && fn.state_reason && (
            <p className="state-reason" data-testid="state-reason">
              Build failed: {fn.state_reason}
            </p>
          )}
          {fn.state !== 'failed' && fn.last_update_status === 'failed' && fn.last_update_status_reason && (
            <p className="state-reason" data-testid="update-reason">
              The last update failed (v{fn.version} still serves): {fn.last_update_status_reason}
            </p>
          )}
        </div>
        <div className="actions">
          <Link href={`/functions/${fn.id}/edit`} className="btn">
            Edit
          </Link>
          <ConfirmButton label="Delete" confirmLabel={`Delete ${fn.name}`} onConfirm={remove} busy={deleting} />
        </div>
      </div>

      <dl className="card meta-grid meta-grid-wide">
        <div>
          <dt>Handler</dt>
          <dd>
            <code>{fn.handler}</code>
          </dd>
        </div>
        <div>
          <dt>Memory</dt>
          <dd>{fn.memory} MiB</dd>
        </div>
        <div>
          <dt>Timeout</dt>
          <dd>{fn.timeout} s</dd>
        </div>
        <div>
          <dt>Environment</dt>
          <dd>{Object.keys(fn.env).length ? Object.keys(fn.env).join(', ') : '—'}</dd>
        </div>
        <div>
          <dt>Secrets</dt>
          <dd data-testid="fn-secrets">{fn.secrets?.length ? fn.secrets.join(', ') : '—'}</dd>
        </div>
        <div className="span-2">
          <dt>Network egress</dt>
          <dd id="fn-egress">
            {fn.egress?.length ? (
              fn.egress.map((e) => (
                <code key={e} className="egress-entry">
                  {e}
                </code>
              ))
            ) : (
              <span className="muted">none (no network)</span>
            )}
          </dd>
        </div>
        <div className="span-2">
          <dt>HTTP trigger</dt>
          <dd>
            {triggerUrl ? (
              <>
                <code className="break">{triggerUrl}</code> {fn.public ? <span className="badge badge-public">public</span> : <span className="badge badge-none">private</span>}
              </>
            ) : (
              '—'
            )}
          </dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd>{ago(fn.updated_at)}</dd>
        </div>
        <div>
          <dt>Code</dt>
          <dd data-testid="fn-package">
            {fn.package
              ? `${fn.package.kind === 'zip' ? 'zip' : 'files'}, ${fn.package.file_count} file${fn.package.file_count === 1 ? '' : 's'}${fn.package.dependencies ? ` + ${fn.package.dependencies}` : ''}`
              : 'one file'}
          </dd>
        </div>
        <div className="span-2">
          <dt>Layers</dt>
          <dd data-testid="fn-layers">
            {fn.layers?.length ? (
              fn.layers.map((l) => (
                <code key={l} className="egress-entry">
                  {l}
                </code>
              ))
            ) : (
              <span className="muted">none</span>
            )}
          </dd>
        </div>
      </dl>

      {fn.package && <PackageEditor fn={fn} onSaved={setFn} />}

      {(fn.package?.dependencies || fn.state === 'pending' || fn.last_update_status === 'in_progress' || fn.state === 'failed') && (
        <section className="card" aria-labelledby="build-title">
          <h2 className="card-title" id="build-title">
            Dependency build
          </h2>
          <BuildPanel fn={fn} onFinished={reload} />
        </section>
      )}

      <div className="tabs" role="tablist" aria-label="Function sections">
        {(
          [
            ['overview', 'Invoke and history'],
            ['versions', 'Versions'],
            ['aliases', 'Aliases'],
          ] as const
        ).map(([k, label]) => (
          <button key={k} type="button" role="tab" id={`tab-${k}`} aria-selected={tab === k} aria-controls={`panel-${k}`} onClick={() => setTab(k)}>
            {label}
          </button>
        ))}
      </div>

      {tab === 'overview' && (
        <div role="tabpanel" id="panel-overview" aria-labelledby="tab-overview">
          <Invoke fn={fn} onRan={() => setHistoryTick((t) => t + 1)} />
          <History fn={fn} tick={historyTick} />
        </div>
      )}
      {tab === 'versions' && (
        <div role="tabpanel" id="panel-versions" aria-labelledby="tab-versions">
          <VersionsPanel fn={fn} tick={versionsTick} onChanged={() => setVersionsTick((t) => t + 1)} />
        </div>
      )}
      {tab === 'aliases' && (
        <div role="tabpanel" id="panel-aliases" aria-labelledby="tab-aliases">
          <AliasesPanel fn={fn} onChanged={() => setVersionsTick((t) => t + 1)} />
        </div>
      )}
    </div>
  );
}

function Invoke({ fn, onRan }: { fn: Fn; onRan: () => void }) {
  const toast = useToast();
  const [input, setInput] = useState('{\n  "name": "VoltRun"\n}\n');
  const [asyncRun, setAsyncRun] = useState(false);
  const [qualifier, setQualifier] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [result, setResult] = useState<Execution | null>(null);
  const finishedLater = useCallback(() => onRan(), [onRan]);

  const invoke = async () => {
    if (busy) return;
    let event = input.trim() === '' ? '{}' : input;
    try {
      JSON.parse(event);
    } catch (e) {
      setError(new ApiError(400, 'invalid_json', `The input is not valid JSON: ${(e as Error).message}`));
      return;
    }
    event = event.trim();
    setBusy(true);
    setError(null);
    try {
      const rec = await api<Execution>('POST', `/api/functions/${encodeURIComponent(fn.id)}/execute${qs({ async: asyncRun ? 'true' : null, qualifier: qualifier.trim() || null })}`, { rawBody: event });
      setResult(rec);
      if (asyncRun) toast('info', 'Run queued');
      else if (rec.status === 'success') toast('success', `${fn.name} succeeded`);
      else toast('error', `${fn.name} failed: ${rec.error?.type ?? rec.status}`);
      onRan();
    } catch (e) {
      setError(e);
      toast('error', e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card" aria-labelledby="invoke-title">
      <h2 className="card-title" id="invoke-title">
        Invoke
      </h2>
      <div className="invoke">
        <div className="invoke-input">
          <label htmlFor="invoke-input" className="label">
            Input event (JSON)
          </label>
          <Suspense fallback={<div className="editor-loading" style={{ height: 160 }}>Loading editor…</div>}>
            <CodeEditor id="invoke-input" label="Input event (JSON)" language="json" value={input} onChange={setInput} height={160} onSubmit={() => void invoke()} />
          </Suspense>
          <div className="invoke-actions">
            <label className="check">
              <input type="checkbox" checked={asyncRun} onChange={(e) => setAsyncRun(e.target.checked)} />
              Run asynchronously
            </label>
            <input id="invoke-qualifier" className="qualifier" aria-label="Version or alias (optional)" placeholder="version or alias" value={qualifier} onChange={(e) => setQualifier(e.target.value)} spellCheck={false} autoComplete="off" />
            <button type="button" className="btn btn-primary" onClick={() => void invoke()} disabled={busy} data-testid="invoke">
              {busy ? 'Running…' : 'Invoke'}
            </button>
          </div>
          <div className="hint">Ctrl+Enter in the editor invokes.</div>
        </div>
        <div className="invoke-result" aria-live="polite">
          <ErrorBox error={error} />
          {busy && !result && <Spinner label="Running…" />}
          {result ? (
            <ExecutionDetail id={result.id} initial={result} onUpdate={finishedLater} />
          ) : (
            !busy && !error && <div className="muted placeholder">Run the function to see its output, logs and duration here.</div>
          )}
        </div>
      </div>
    </section>
  );
}

function History({ fn, tick }: { fn: Fn; tick: number }) {
  const [cursor, setCursor] = useState<string | null>(null);
  const [items, setItems] = useState<Execution[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const page = useLoad((s) => get<Page<Execution>>(`/api/executions${qs({ function_id: fn.id, limit: HISTORY, cursor })}`, s), [fn.id, cursor, tick]);
  useEffect(() => {
    if (page.data) setItems((prev) => (cursor ? [...prev, ...page.data!.items] : page.data!.items));
  }, [page.data, cursor]);
  useEffect(() => {
    setCursor(null);
  }, [tick]);
  const close = useCallback(() => setOpen(null), []);
  return (
    <section className="card table-card" aria-labelledby="history-title">
      <div className="card-head">
        <h2 className="card-title" id="history-title">
          History
        </h2>
        <Link href={`/executions?function_id=${encodeURIComponent(fn.id)}`}>All executions →</Link>
      </div>
      {page.error ? (
        <ErrorBox error={page.error} retry={page.reload} />
      ) : page.loading && items.length === 0 ? (
        <Spinner />
      ) : items.length === 0 ? (
        <div className="muted placeholder">No runs yet.</div>
      ) : (
        <ExecutionsTable items={items} onOpen={setOpen} showFunction={false} testId="history-table" />
      )}
      {page.data?.next_cursor && (
        <div className="table-foot">
          <button type="button" className="btn" disabled={page.loading} onClick={() => setCursor(page.data!.next_cursor)}>
            Load more
          </button>
        </div>
      )}
      {open && (
        <Drawer title="Execution" onClose={close}>
          <ExecutionDetail id={open} />
        </Drawer>
      )}
    </section>
  );
}
