// Statistics from GET /api/dashboard: totals, success rate, duration percentiles and the last
// 24 hours per hour, as charts.
import { useState } from 'react';
import { get, type Dashboard } from '../api';
import { DurationChart, InvocationsChart, SuccessRing } from '../components/Charts';
import { ExecutionDetail } from '../components/ExecutionDetail';
import { ExecutionsTable } from '../components/ExecutionsTable';
import { Drawer, ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { dateTime, duration, percent } from '../format';

export function Stats() {
  usePageTitle('Statistics');
  const d = useLoad((s) => get<Dashboard>('/api/dashboard', s), []);
  const [open, setOpen] = useState<string | null>(null);
  if (d.error) return <ErrorBox error={d.error} retry={d.reload} />;
  if (!d.data) return <Spinner label="Loading statistics…" />;
  const s = d.data;
  const cards = [
    { label: 'Functions', value: String(s.functions) },
    { label: 'Runs, all time', value: String(s.executions_total) },
    { label: 'Runs, 24 h', value: String(s.last_24h.invocations) },
    { label: 'Errors, 24 h', value: String(s.last_24h.failed), bad: s.last_24h.failed > 0 },
    { label: 'Success rate, 24 h', value: percent(s.last_24h.success_rate) },
    { label: 'Duration p50', value: duration(s.duration_ms.p50) },
    { label: 'Duration p95', value: duration(s.duration_ms.p95) },
    { label: 'Duration p99', value: duration(s.duration_ms.p99) },
  ];
  return (
    <div className="page">
      <div className="page-head">
        <h1>Statistics</h1>
        <button type="button" className="btn" onClick={d.reload} disabled={d.loading}>
          Refresh
        </button>
      </div>
      <div className="stat-cards">
        {cards.map((c) => (
          <div key={c.label} className={`stat${c.bad ? ' stat-bad' : ''}`}>
            <div className="stat-value">{c.value}</div>
            <div className="stat-label">{c.label}</div>
          </div>
        ))}
      </div>
      <div className="charts">
        <section className="card chart-card chart-wide" aria-labelledby="c-inv">
          <h2 className="card-title" id="c-inv">
            Invocations and errors per hour
          </h2>
          <InvocationsChart hourly={s.hourly} />
        </section>
        <section className="card chart-card" aria-labelledby="c-rate">
          <h2 className="card-title" id="c-rate">
            Success rate, 24 h
          </h2>
          <SuccessRing success={s.last_24h.success} failed={s.last_24h.failed} />
        </section>
        <section className="card chart-card chart-wide" aria-labelledby="c-dur">
          <h2 className="card-title" id="c-dur">
            Duration per hour
          </h2>
          <DurationChart hourly={s.hourly} p50={s.duration_ms.p50} p95={s.duration_ms.p95} />
        </section>
      </div>
      <section className="card table-card" aria-labelledby="recent-title">
        <h2 className="card-title" id="recent-title">
          Recent executions
        </h2>
        {s.recent.length === 0 ? <div className="muted placeholder">No runs yet.</div> : <ExecutionsTable items={s.recent} onOpen={setOpen} />}
      </section>
      <p className="muted small">Generated {dateTime(s.generated_at)}. Hours are shown in your local time.</p>
      {open && (
        <Drawer title="Execution" onClose={() => setOpen(null)}>
          <ExecutionDetail id={open} />
        </Drawer>
      )}
    </div>
  );
}
