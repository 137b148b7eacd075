// The functions list: runtime, last run and invocation count of each function. The API has
// no per-function counters, so the counts come from the executions list (capped at RECENT).
import { useEffect, useState } from 'react';
import { get, qs, type Execution, type FnSummary, type Page } from '../api';
import { Empty, ErrorBox, Spinner, StateBadge, StatusBadge, useLoad, usePageTitle } from '../components/ui';
import { ago, runtimeLabel } from '../format';
import { Link, navigate } from '../router';

const RECENT = 100;

interface FnStats {
  last: Execution | null;
  count: number;
  more: boolean;
}

export function Functions() {
  usePageTitle('Functions');
  const [cursor, setCursor] = useState<string | null>(null);
  const [items, setItems] = useState<FnSummary[]>([]);
  const page = useLoad((s) => get<Page<FnSummary>>(`/api/functions${qs({ limit: 50, cursor })}`, s), [cursor]);
  useEffect(() => {
    if (page.data) setItems((prev) => (cursor ? [...prev, ...page.data!.items] : page.data!.items));
  }, [page.data, cursor]);
  const stats = useFunctionStats(items);
  // While a build runs, the list looks again every few seconds for its end.
  const building = items.some((f) => f.state === 'pending' || f.last_update_status === 'in_progress');
  const { reload } = page;
  useEffect(() => {
    if (!building || cursor) return;
    const t = setInterval(reload, 3000);
    return () => clearInterval(t);
  }, [building, cursor, reload]);

  return (
    <div className="page">
      <div className="page-head">
        <h1>Functions</h1>
        <Link href="/functions/new" className="btn btn-primary">
          New function
        </Link>
      </div>
      {page.error ? (
        <ErrorBox error={page.error} retry={page.reload} />
      ) : page.loading && items.length === 0 ? (
        <Spinner label="Loading functions…" />
      ) : items.length === 0 ? (
        <Empty title="No functions yet">
          <p>Write a Python or Node.js handler and run it in an isolated sandbox.</p>
          <Link href="/functions/new" className="btn btn-primary">
            Create your first function
          </Link>
        </Empty>
      ) : (
        <div className="card table-card">
          <div className="table-scroll">
            <table className="table table-rows-link" data-testid="functions-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Runtime</th>
                  <th>State</th>
                  <th>Last run</th>
                  <th className="num">
                    <span className="hide-sm">Invocations</span>
                    <span className="show-sm">Runs</span>
                  </th>
                  <th className="hide-sm">Route</th>
                  <th className="hide-sm">Updated</th>
                </tr>
              </thead>
              <tbody>
                {items.map((f) => {
                  const s = stats[f.id];
                  return (
                    <tr key={f.id} onClick={() => navigate(`/functions/${f.id}`)}>
                      <td className="nowrap">
                        <Link href={`/functions/${f.id}`} className="strong" onClick={(e) => e.stopPropagation()}>
                          {f.name}
                        </Link>
                        {f.description && <div className="muted small clip">{f.description}</div>}
                      </td>
                      <td>
                        <span className={`runtime runtime-${f.runtime.startsWith('python') ? 'py' : 'js'}`}>{runtimeLabel(f.runtime)}</span>
                      </td>
                      <td>
                        <StateBadge fn={f} />
                      </td>
                      <td>
                        {s === undefined ? (
                          <span className="muted">…</span>
                        ) : (
                          <span className="last-run">
                            <StatusBadge status={s.last?.status} />
                            {s.last && <span className="muted small hide-sm">{ago(s.last.created_at)}</span>}
                          </span>
                        )}
                      </td>
                      <td className="num">{s === undefined ? '…' : `${s.count}${s.more ? '+' : ''}`}</td>
                      <td className="hide-sm">{f.route ? <code>/{f.route}</code> : <span className="muted">—</span>}</td>
                      <td className="hide-sm muted">{ago(f.updated_at)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          {page.data?.next_cursor && (
            <div className="table-foot">
              <button type="button" className="btn" disabled={page.loading} onClick={() => setCursor(page.data!.next_cursor)}>
                {page.loading ? 'Loading…' : 'Load more'}
              </button>
            </div>
          )}
        </div>
      )}
    </div>
  );
}

/** Last run and run count per function, fetched a few at a time. */
function useFunctionStats(fns: FnSummary[]): Record<string, FnStats> {
  const [stats, setStats] = useState<Record<string, FnStats>>({});
  const ids = fns.map((f) => f.id).join(',');
  useEffect(() => {
    const ctl = new AbortController();
    const queue = fns.map((f) => f.id);
    const worker = async () => {
      for (let id = queue.shift(); id; id = queue.shift()) {
        try {
          const p = await get<Page<Execution>>(`/api/executions${qs({ function_id: id, limit: RECENT })}`, ctl.signal);
          const s = { last: p.items[0] ?? null, count: p.items.length, more: !!p.next_cursor };
          setStats((prev) => ({ ...prev, [id as string]: s }));
        } catch {
          if (ctl.signal.aborted) return;
        }
      }
    };
    for (let i = 0; i < 4; i++) void worker();
    return () => ctl.abort();
  }, [ids]);
  return stats;
}
