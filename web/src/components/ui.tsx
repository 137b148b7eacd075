// Small shared pieces: status badges, loading, empty and error states, the drawer, confirm
// buttons and a hook that loads data from the API.
import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import { ApiError } from '../api';

export function StatusBadge({ status }: { status: string | null | undefined }) {
  if (!status) return <span className="badge badge-none">never run</span>;
  return (
    <span className={`badge badge-${status}`} data-status={status}>
      {(status === 'running' || status === 'pending') && <span className="pulse" aria-hidden="true" />}
      {status}
    </span>
  );
}

/**
 * A function's build state (`pending` / `active` / `failed`), and an update in flight or
 * failed next to it. Functions from before packages have no state: they are active.
 */
export function StateBadge({ fn, testId = 'fn-state' }: { fn: { state?: string; state_reason?: string | null; last_update_status?: string; last_update_status_reason?: string | null }; testId?: string }) {
  const state = fn.state ?? 'active';
  const update = fn.last_update_status;
  return (
    <span className="state-badges">
      <span className={`badge badge-state-${state}`} data-testid={testId} data-state={state} title={fn.state_reason ?? undefined}>
        {state === 'pending' && <span className="pulse" aria-hidden="true" />}
        {state}
      </span>
      {state === 'active' && update === 'in_progress' && (
        <span className="badge badge-pending" data-testid={`${testId}-update`} data-update="in_progress" title="A new version is building; the last good one serves meanwhile">
          <span className="pulse" aria-hidden="true" />
          updating
        </span>
      )}
      {state === 'active' && update === 'failed' && (
        <span className="badge badge-failed" data-testid={`${testId}-update`} data-update="failed" title={fn.last_update_status_reason ?? undefined}>
          update failed
        </span>
      )}
    </span>
  );
}

export function Spinner({ label = 'Loading…' }: { label?: string }) {
  return (
    <div className="loading" role="status">
      <span className="spinner" aria-hidden="true" />
      <span>{label}</span>
    </div>
  );
}

export function ErrorBox({ error, retry }: { error: unknown; retry?: () => void }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const code = error instanceof ApiError ? error.code : null;
  return (
    <div className="error-box" role="alert">
      <div>
        <strong>{code === 'network_error' ? 'Offline' : 'Error'}</strong>
        {code && code !== 'network_error' && <code className="error-code">{code}</code>}
        <div className="error-message">{message}</div>
      </div>
      {retry && (
        <button type="button" className="btn btn-small" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <svg viewBox="0 0 48 48" width="40" height="40" aria-hidden="true">
        <path d="M27 6 13 27h10l-3 15 15-21H25z" fill="none" stroke="currentColor" strokeWidth="2.5" strokeLinejoin="round" />
      </svg>
      <h3>{title}</h3>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

/** A button that asks for confirmation in place before acting (no modal dialog). */
export function ConfirmButton({
  label,
  confirmLabel,
  onConfirm,
  busy,
  small,
}: {
  label: string;
  confirmLabel: string;
  onConfirm: () => void;
  busy?: boolean;
  small?: boolean;
}) {
  const [asking, setAsking] = useState(false);
  const confirmRef = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (asking) confirmRef.current?.focus();
  }, [asking]);
  const size = small ? ' btn-small' : '';
  if (!asking)
    return (
      <button type="button" className={`btn btn-ghost-danger${size}`} onClick={() => setAsking(true)}>
        {label}
      </button>
    );
  return (
    <span className="confirm">
      <button
        ref={confirmRef}
        type="button"
        className={`btn btn-danger${size}`}
        disabled={busy}
        onClick={() => {
          onConfirm();
          setAsking(false);
        }}
      >
        {confirmLabel}
      </button>
      <button type="button" className={`btn${size}`} onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

/** A side drawer (a modal dialog): Esc or the backdrop closes it; focus moves in and back. */
export function Drawer({ title, onClose, children }: { title: ReactNode; onClose: () => void; children: ReactNode }) {
  const closeRef = useRef<HTMLButtonElement>(null);
  const panelRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    closeRef.current?.focus();
    const key = (e: KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
      if (e.key === 'Tab' && panelRef.current) {
        // keep focus inside the dialog
        const f = panelRef.current.querySelectorAll<HTMLElement>('a[href], button:not([disabled]), input, select, textarea, [tabindex]:not([tabindex="-1"])');
        if (f.length === 0) return;
        const first = f[0];
        const last = f[f.length - 1];
        if (e.shiftKey && document.activeElement === first) {
          e.preventDefault();
          last.focus();
        } else if (!e.shiftKey && document.activeElement === last) {
          e.preventDefault();
          first.focus();
        }
      }
    };
    document.addEventListener('keydown', key);
    document.body.classList.add('no-scroll');
    return () => {
      document.removeEventListener('keydown', key);
      document.body.classList.remove('no-scroll');
      before?.focus?.();
    };
  }, [onClose]);
  return (
    <div className="drawer-root">
      <div className="drawer-backdrop" onClick={onClose} />
      <div className="drawer" role="dialog" aria-modal="true" aria-labelledby="drawer-title" ref={panelRef}>
        <div className="drawer-head">
          <h2 id="drawer-title">{title}</h2>
          <button ref={closeRef} type="button" className="btn btn-icon" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </div>
        <div className="drawer-body">{children}</div>
      </div>
    </div>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (d: T) => void;
}

/** Loads `fn()` on mount and whenever `deps` change; aborts stale loads. */
export function useLoad<T>(fn: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    setError(null);
    fn(ctl.signal)
      .then((d) => {
        if (!ctl.signal.aborted) setData(d);
      })
      .catch((e) => {
        if (!ctl.signal.aborted) setError(e);
      })
      .finally(() => {
        if (!ctl.signal.aborted) setLoading(false);
      });
    return () => ctl.abort();
  }, [...deps, tick]);
  return { data, error, loading, reload, setData };
}

export function usePageTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · VoltRun` : 'VoltRun';
  }, [title]);
}

export function CopyButton({ text, label = 'Copy', onCopied }: { text: string; label?: string; onCopied?: (ok: boolean) => void }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch {
      // Clipboard API refused (e.g. no permission): fall back to a selected textarea.
      const ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      ta.remove();
    }
    setDone(ok);
    onCopied?.(ok);
    if (ok) setTimeout(() => setDone(false), 2000);
  };
  return (
    <button type="button" className="btn" onClick={copy}>
      {done ? 'Copied ✓' : label}
    </button>
  );
}
