// The latest dependency build of a function: its status, and its log, live (SSE) while it
// runs and the final log and reason after. `onFinished` lets the page reload the function,
// whose state the build's end changes.
import { useEffect, useRef, useState } from 'react';
import { ApiError, followBuild, get, type Build, type Fn } from '../api';
import { dateTime, duration } from '../format';
import { ErrorBox, Spinner } from './ui';

/** How often, at most, a missing build is looked for again while the function says one runs. */
const MISSING_RETRY_MS = 1000;
const MISSING_RETRIES = 30;

export function BuildPanel({ fn, onFinished }: { fn: Fn; onFinished: () => void }) {
  const [build, setBuild] = useState<Build | null | undefined>(undefined);
  const [live, setLive] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const finished = useRef(onFinished);
  finished.current = onFinished;
  const expecting = fn.state === 'pending' || fn.last_update_status === 'in_progress';

  useEffect(() => {
    const ctl = new AbortController();
    let cancelled = false;
    setError(null);
    (async () => {
      let b: Build | null = null;
      // A build the function says runs may not be recorded yet: look again a few times.
      for (let i = 0; ; i++) {
        try {
          b = await get<Build>(`/api/functions/${encodeURIComponent(fn.id)}/build`, ctl.signal);
          break;
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 404)) throw e;
          if (!expecting || i >= MISSING_RETRIES) break;
          await new Promise((r) => setTimeout(r, MISSING_RETRY_MS));
          if (cancelled) return;
        }
      }
      if (cancelled) return;
      setBuild(b);
      if (!b || b.status !== 'building') return;
      setLive('');
      let end: Build | null = null;
      await followBuild(
        fn.id,
        {
          onLog: (t) => setLive((l) => (l ?? '') + t),
          onEnd: (e) => {
            end = e;
          },
        },
        ctl.signal,
      );
      if (cancelled) return;
      const done = end ?? (await get<Build>(`/api/functions/${encodeURIComponent(fn.id)}/build`, ctl.signal));
      if (cancelled) return;
      setBuild(done);
      setLive(null);
      finished.current();
    })().catch((e) => {
      if (cancelled || (e instanceof DOMException && e.name === 'AbortError')) return;
      setLive(null);
      setError(e);
    });
    return () => {
      cancelled = true;
      ctl.abort();
    };
    // A new version (or a new update in flight) may have a new build.
  }, [fn.id, fn.version, fn.state, fn.last_update_status, tick]);

  const logRef = useRef<HTMLPreElement>(null);
  const logs = live ?? build?.logs ?? '';
  useEffect(() => {
    if (live !== null && logRef.current) logRef.current.scrollTop = logRef.current.scrollHeight;
  }, [logs, live]);

  if (build === undefined && !error) return <Spinner label="Loading the build…" />;
  if (!build) {
    return (
      <>
        <ErrorBox error={error} retry={() => setTick((t) => t + 1)} />
        <div className="muted placeholder" data-testid="no-build">
          {fn.package?.dependencies ? 'No build yet.' : 'No dependencies to build: the package is used as it is.'}
        </div>
      </>
    );
  }
  const status = live !== null ? 'building' : build.status;
  return (
    <div className="build" data-testid="build" data-status={status}>
      <ErrorBox error={error} retry={() => setTick((t) => t + 1)} />
      <div className="exec-summary">
        <span className={`badge badge-build-${status}`} data-testid="build-status">
          {status === 'building' && <span className="pulse" aria-hidden="true" />}
          {status}
        </span>
        {build.cached && <span className="badge badge-none">from cache</span>}
        <span className="muted small">
          for v{build.function_version} · started {dateTime(build.started_at)}
          {build.duration_ms !== null && ` · took ${duration(build.duration_ms)}`}
        </span>
        {live !== null && (
          <span className="live" data-testid="build-live">
            <span className="pulse" aria-hidden="true" /> live
          </span>
        )}
      </div>
      {build.reason && status === 'failed' && (
        <div className="exec-error" data-testid="build-reason">
          {build.reason}
        </div>
      )}
      <pre className="logs" ref={logRef} data-testid="build-logs" tabIndex={0} aria-label="Build log">
        {logs || <span className="muted">{live !== null ? 'Waiting for output…' : 'No output.'}</span>}
      </pre>
      {build.logs_truncated && live === null && <div className="muted small">The log was truncated.</div>}
    </div>
  );
}
