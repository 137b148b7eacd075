// All executions: status and function filters (kept in the URL), cursor pagination, and a
// drawer with the full record, live while it runs (?id= opens it, so it can be linked).
import { useCallback, useEffect, useState } from 'react';
import { get, qs, type Execution, type FnSummary, type Page } from '../api';
import { ExecutionDetail } from '../components/ExecutionDetail';
import { ExecutionsTable } from '../components/ExecutionsTable';
import { Drawer, Empty, ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { setQuery, useLocation } from '../router';

const PAGE = 20;
const STATUSES = ['pending', 'running', 'success', 'failed'];

export function Executions() {
  usePageTitle('Executions');
  const { search } = useLocation();
  const status = search.get('status') ?? '';
  const functionId = search.get('function_id') ?? '';
  const open = search.get('id');
  // cursors[i] is the cursor of page i (page 0 has none)
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [tick, setTick] = useState(0);
  const pageNo = cursors.length - 1;
  const cursor = cursors[pageNo];
  useEffect(() => {
    setCursors([null]);
  }, [status, functionId]);

  const fns = useLoad((s) => get<Page<FnSummary>>('/api/functions?limit=500', s), []);
  const page = useLoad(
    (s) => get<Page<Execution>>(`/api/executions${qs({ status, function_id: functionId, limit: PAGE, cursor })}`, s),
    [status, functionId, cursor, tick],
  );
  const items = page.data?.items ?? [];

  // While a listed run has not finished, refresh the page every 2 seconds.
  const unfinished = items.some((e) => e.status === 'pending' || e.status === 'running');
  useEffect(() => {
    if (!unfinished) return;
    const t = setTimeout(() => setTick((x) => x + 1), 2000);
    return () => clearTimeout(t);
  }, [unfinished, page.data]);

  const close = useCallback(() => setQuery({ id: null }), []);
  const filtered = status || functionId;

  return (
    <div className="page">
      <div className="page-head">
        <h1>Executions</h1>
        <button type="button" className="btn" onClick={() => setTick((x) => x + 1)} disabled={page.loading}>
          Refresh
        </button>
      </div>
      <div className="filters" role="search">
        <div className="field field-inline">
          <label htmlFor="filter-status">Status</label>
          <select id="filter-status" value={status} onChange={(e) => setQuery({ status: e.target.value || null, id: null })}>
            <option value="">All</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div className="field field-inline">
          <label htmlFor="filter-function">Function</label>
          <select id="filter-function" value={functionId} onChange={(e) => setQuery({ function_id: e.target.value || null, id: null })}>
            <option value="">All</option>
            {functionId && !fns.data?.items.some((f) => f.id === functionId) && <option value={functionId}>{functionId}</option>}
            {fns.data?.items.map((f) => (
              <option key={f.id} value={f.id}>
                {f.name}
              </option>
            ))}
          </select>
        </div>
        {filtered && (
          <button type="button" className="btn btn-plain btn-small" onClick={() => setQuery({ status: null, function_id: null })}>
            Clear filters
          </button>
        )}
      </div>
      <div className="card table-card">
        {page.error ? (
          <ErrorBox error={page.error} retry={page.reload} />
        ) : page.loading && !page.data ? (
          <Spinner label="Loading executions…" />
        ) : items.length === 0 ? (
          <Empty title={filtered ? 'No executions match these filters' : 'No executions yet'}>
            <p>{filtered ? 'Try another status or function.' : 'Invoke a function to see its runs here.'}</p>
          </Empty>
        ) : (
          <ExecutionsTable items={items} onOpen={(id) => setQuery({ id })} testId="executions-table" />
        )}
        <div className="pager">
          <button type="button" className="btn btn-small" disabled={pageNo === 0 || page.loading} onClick={() => setCursors((c) => c.slice(0, -1))}>
            ← Newer
          </button>
          <span className="muted small" aria-live="polite">
            Page {pageNo + 1}
          </span>
          <button
            type="button"
            className="btn btn-small"
            disabled={!page.data?.next_cursor || page.loading}
            onClick={() => setCursors((c) => [...c, page.data!.next_cursor])}
          >
            Older →
          </button>
        </div>
      </div>
      {open && (
        <Drawer title="Execution" onClose={close}>
          <ExecutionDetail id={open} onUpdate={() => setTick((x) => x + 1)} />
        </Drawer>
      )}
    </div>
  );
}
