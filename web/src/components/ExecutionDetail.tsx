// One execution record: status, timings, input, output, error and logs. While the run is
// pending or running, the logs follow the SSE stream and the record is reloaded at its end.
import { useEffect, useRef, useState } from 'react';
import { ApiError, followLogs, get, type Execution } from '../api';
import { dateTime, duration, pretty } from '../format';
import { Link } from '../router';
import { ErrorBox, Spinner, StatusBadge } from './ui';
import { qualifierOf } from './ExecutionsTable';

const finished = (s: string) => s === 'success' || s === 'failed';

export function ExecutionDetail({ id, initial, onUpdate }: { id: string; initial?: Execution; onUpdate?: (e: Execution) => void }) {
  const [rec, setRec] = useState<Execution | undefined>(initial);
  const [error, setError] = useState<unknown>(null);
  const [liveLogs, setLiveLogs] = useState<string | null>(null);
  const [live, setLive] = useState(false);
  const [tick, setTick] = useState(0);
  const update = useRef(onUpdate);
  update.current = onUpdate;

  // Load the record (unless given a finished one), then follow its logs if it is not done.
  useEffect(() => {
    const ctl = new AbortController();
    let cancelled = false;
    setError(null);
    (async () => {
      let r = initial && initial.id === id ? initial : undefined;
      setRec(r);
      if (!r || !finished(r.status)) {
        r = await get<Execution>(`/api/executions/${encodeURIComponent(id)}`, ctl.signal);
        if (cancelled) return;
        setRec(r);
        update.current?.(r);
      }
      if (finished(r.status)) return;
      setLive(true);
      setLiveLogs('');
      await followLogs(
        id,
        {
          onLog: (t) => setLiveLogs((l) => (l ?? '') + t),
          onEnd: () => {},
        },
        ctl.signal,
      );
      if (cancelled) return;
      setLive(false);
      const done = await get<Execution>(`/api/executions/${encodeURIComponent(id)}`, ctl.signal);
      if (cancelled) return;
      setRec(done);
      setLiveLogs(null);
      update.current?.(done);
    })().catch((e) => {
      if (cancelled || (e instanceof DOMException && e.name === 'AbortError')) return;
      setLive(false);
      setError(e);
    });
    return () => {
      cancelled = true;
      ctl.abort();
    };
    // `initial` is only a head start for the same id
  }, [id, tick]);

  if (error && !rec) return <ErrorBox error={error} retry={() => setTick((t) => t + 1)} />;
  if (!rec) return <Spinner label="Loading execution…" />;
  const logs = liveLogs ?? rec.logs;
  return (
    <div className="exec-detail" data-testid="execution-detail" data-status={rec.status}>
      {error instanceof ApiError && <ErrorBox error={error} retry={() => setTick((t) => t + 1)} />}
      <div className="exec-summary">
        <StatusBadge status={live && rec.status === 'pending' ? 'running' : rec.status} />
        <span className="exec-duration" title="Handler run time, without queueing and cold start">
          <span className="muted">Duration</span> <span data-testid="duration">{duration(rec.duration_ms)}</span>
        </span>
        <span className="muted">
          <Link href={`/functions/${encodeURIComponent(rec.function_id)}`}>{rec.function_name}</Link> v{rec.function_version}
          {qualifierOf(rec) ? ` via ${qualifierOf(rec)}` : ''} · {rec.trigger}
          {rec.attempts && rec.attempts > 1 ? ` · ${rec.attempts} attempts` : ''}
        </span>
      </div>
      <dl className="meta-grid">
        <div>
          <dt>Execution</dt>
          <dd>
            <code>{rec.id}</code>
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{dateTime(rec.created_at)}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>{dateTime(rec.started_at)}</dd>
        </div>
        <div>
          <dt>Finished</dt>
          <dd>{dateTime(rec.finished_at)}</dd>
        </div>
      </dl>
      {rec.error && (
        <section className="exec-section">
          <h3>Error</h3>
          <div className="exec-error" data-testid="exec-error">
            <div>
              <strong>{rec.error.type}</strong>: {rec.error.message}
            </div>
            {rec.error.stack && <pre className="stack">{rec.error.stack}</pre>}
          </div>
        </section>
      )}
      {finished(rec.status) && !rec.error && (
        <section className="exec-section">
          <h3>Output</h3>
          <pre className="code-block" data-testid="exec-output">
            {pretty(rec.output)}
          </pre>
        </section>
      )}
      <section className="exec-section">
        <h3>
          Logs
          {live && (
            <span className="live" data-testid="live">
              <span className="pulse" aria-hidden="true" /> live
            </span>
          )}
          {rec.logs_truncated && <span className="muted small"> (truncated at 256 KiB)</span>}
        </h3>
        <LogView text={logs} follow={live} />
      </section>
      <section className="exec-section">
        <h3>Input</h3>
        <pre className="code-block" data-testid="exec-input">
          {pretty(rec.input)}
        </pre>
      </section>
    </div>
  );
}

function LogView({ text, follow }: { text: string; follow: boolean }) {
  const ref = useRef<HTMLPreElement>(null);
  useEffect(() => {
    if (follow && ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  }, [text, follow]);
  return (
    <pre className="logs" ref={ref} data-testid="exec-logs" tabIndex={0} aria-label="Logs">
      {text || <span className="muted">{follow ? 'Waiting for output…' : 'No output.'}</span>}
    </pre>
  );
}
