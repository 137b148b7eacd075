// Hand-written SVG charts for the statistics page: a stacked bar chart of runs and errors per
// hour, a line of the hourly mean duration against the 24 h p50 and p95, and a success-rate
// ring. Small enough not to need a charting library; each chart has a text alternative.
import { useEffect, useRef, useState, type RefObject } from 'react';
import type { HourBucket } from '../api';
import { duration } from '../format';

function useWidth<T extends HTMLElement>(): [RefObject<T | null>, number] {
  const ref = useRef<T>(null);
  const [w, setW] = useState(600);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver((entries) => {
      const cw = Math.floor(entries[0].contentRect.width);
      if (cw > 0) setW(cw);
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return [ref, w];
}

/** Round tick values from 0 to at least `max`. */
function ticks(max: number, count = 4): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 0.999; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

const hourLabel = (iso: string) => {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, '0')}:00`;
};

const PAD = { top: 12, right: 12, bottom: 26, left: 44 };
const H = 220;

export function InvocationsChart({ hourly }: { hourly: HourBucket[] }) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const max = Math.max(1, ...hourly.map((h) => h.invocations));
  const ys = ticks(max);
  const top = ys[ys.length - 1];
  const iw = Math.max(10, width - PAD.left - PAD.right);
  const ih = H - PAD.top - PAD.bottom;
  const slot = iw / Math.max(1, hourly.length);
  const bw = Math.max(2, Math.min(28, slot * 0.7));
  const y = (v: number) => PAD.top + ih - (v / top) * ih;
  const every = width < 480 ? 6 : 3;
  const total = hourly.reduce((a, h) => a + h.invocations, 0);
  const errors = hourly.reduce((a, h) => a + h.errors, 0);
  return (
    <div ref={ref} className="chart" data-testid="chart-invocations">
      <svg width={width} height={H} role="img" aria-label={`Invocations per hour over the last 24 hours: ${total} runs, ${errors} errors`}>
        {ys.map((t) => (
          <g key={t}>
            <line x1={PAD.left} x2={width - PAD.right} y1={y(t)} y2={y(t)} className="grid" />
            <text x={PAD.left - 6} y={y(t) + 4} className="axis" textAnchor="end">
              {t}
            </text>
          </g>
        ))}
        {hourly.map((h, i) => {
          const x = PAD.left + i * slot + (slot - bw) / 2;
          const ok = h.invocations - h.errors;
          return (
            <g key={h.hour} className="bar-group">
              <title>{`${hourLabel(h.hour)}: ${h.invocations} invocations, ${h.errors} errors`}</title>
              <rect x={PAD.left + i * slot} y={PAD.top} width={slot} height={ih} className="hover-target" />
              {ok > 0 && <rect x={x} y={y(h.invocations)} width={bw} height={y(h.errors) - y(h.invocations)} rx={2} className="bar-ok" />}
              {h.errors > 0 && <rect x={x} y={y(h.errors)} width={bw} height={y(0) - y(h.errors)} rx={2} className="bar-err" />}
              {i % every === 0 && (
                <text x={PAD.left + i * slot + slot / 2} y={H - 8} className="axis" textAnchor="middle">
                  {hourLabel(h.hour)}
                </text>
              )}
            </g>
          );
        })}
        <line x1={PAD.left} x2={width - PAD.right} y1={y(0)} y2={y(0)} className="baseline" />
      </svg>
      <div className="legend">
        <span>
          <i className="swatch swatch-ok" /> successful
        </span>
        <span>
          <i className="swatch swatch-err" /> errors
        </span>
      </div>
    </div>
  );
}

export function DurationChart({ hourly, p50, p95 }: { hourly: HourBucket[]; p50: number | null; p95: number | null }) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const vals = hourly.map((h) => h.avg_duration_ms);
  const max = Math.max(0.001, ...vals.map((v) => v ?? 0), p50 ?? 0, p95 ?? 0);
  const ys = ticks(max);
  const top = ys[ys.length - 1];
  const iw = Math.max(10, width - PAD.left - PAD.right);
  const ih = H - PAD.top - PAD.bottom;
  const slot = iw / Math.max(1, hourly.length);
  const x = (i: number) => PAD.left + i * slot + slot / 2;
  const y = (v: number) => PAD.top + ih - (v / top) * ih;
  // Line segments over consecutive hours that have a value.
  const segments: string[] = [];
  let cur = '';
  vals.forEach((v, i) => {
    if (v === null) {
      if (cur) segments.push(cur);
      cur = '';
    } else {
      cur += `${cur ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    }
  });
  if (cur) segments.push(cur);
  const every = width < 480 ? 6 : 3;
  const fmt = (v: number) => (top >= 1000 ? `${(v / 1000).toFixed(v % 1000 ? 1 : 0)}s` : `${Number(v.toPrecision(3))}`);
  return (
    <div ref={ref} className="chart" data-testid="chart-duration">
      <svg width={width} height={H} role="img" aria-label={`Mean duration per hour; 24 hour p50 ${duration(p50)}, p95 ${duration(p95)}`}>
        {ys.map((t) => (
          <g key={t}>
            <line x1={PAD.left} x2={width - PAD.right} y1={y(t)} y2={y(t)} className="grid" />
            <text x={PAD.left - 6} y={y(t) + 4} className="axis" textAnchor="end">
              {fmt(t)}
            </text>
          </g>
        ))}
        {hourly.map(
          (h, i) =>
            i % every === 0 && (
              <text key={h.hour} x={x(i)} y={H - 8} className="axis" textAnchor="middle">
                {hourLabel(h.hour)}
              </text>
            ),
        )}
        {p95 !== null && <line x1={PAD.left} x2={width - PAD.right} y1={y(p95)} y2={y(p95)} className="ref ref-p95" />}
        {p50 !== null && <line x1={PAD.left} x2={width - PAD.right} y1={y(p50)} y2={y(p50)} className="ref ref-p50" />}
        {segments.map((d, i) => (
          <path key={i} d={d} className="line" />
        ))}
        {vals.map(
          (v, i) =>
            v !== null && (
              <circle key={i} cx={x(i)} cy={y(v)} r={3} className="dot">
                <title>{`${hourLabel(hourly[i].hour)}: mean ${duration(v)}`}</title>
              </circle>
            ),
        )}
        <line x1={PAD.left} x2={width - PAD.right} y1={y(0)} y2={y(0)} className="baseline" />
      </svg>
      <div className="legend">
        <span>
          <i className="swatch swatch-line" /> mean per hour (ms)
        </span>
        <span>
          <i className="swatch swatch-p50" /> p50 {duration(p50)}
        </span>
        <span>
          <i className="swatch swatch-p95" /> p95 {duration(p95)}
        </span>
      </div>
    </div>
  );
}

export function SuccessRing({ success, failed }: { success: number; failed: number }) {
  const total = success + failed;
  const rate = total ? success / total : null;
  const r = 52;
  const c = 2 * Math.PI * r;
  return (
    <div className="ring" data-testid="chart-success">
      <svg width={140} height={140} viewBox="0 0 140 140" role="img" aria-label={rate === null ? 'No finished runs' : `Success rate ${(rate * 100).toFixed(1)}%`}>
        <circle cx={70} cy={70} r={r} className={total ? 'ring-fail' : 'ring-empty'} />
        {rate !== null && rate > 0 && (
          <circle cx={70} cy={70} r={r} className="ring-ok" strokeDasharray={`${c * rate} ${c}`} transform="rotate(-90 70 70)" />
        )}
        <text x={70} y={68} textAnchor="middle" className="ring-value">
          {rate === null ? '—' : `${(rate * 100).toFixed(rate === 1 || rate === 0 ? 0 : 1)}%`}
        </text>
        <text x={70} y={88} textAnchor="middle" className="ring-label">
          success
        </text>
      </svg>
      <div className="ring-legend">
        <div>
          <i className="swatch swatch-ok" /> {success} succeeded
        </div>
        <div>
          <i className="swatch swatch-err" /> {failed} failed
        </div>
      </div>
    </div>
  );
}
