// The secrets a function's runs get as environment variables (issue 16): names only, picked
// from the caller's secrets (GET /api/secrets, every page, bounded). The values never reach the
// dashboard; a name the list does not have (another tab deleted it) stays listed so the API's
// 400 can name it at the field.
import { useState } from 'react';
import { get, type Secret } from '../api';
import { itemsOf } from './LayersPicker';
import { useLoad } from './ui';

/** Every secret name of the caller, all pages (at most 20 pages of 100). */
export async function allSecretNames(signal: AbortSignal): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 20; i++) {
    const r: { items: Secret[]; next_cursor?: string | null } | Secret[] = await get(`/api/secrets?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, signal);
    out.push(...itemsOf(r).map((s) => s.name));
    cursor = Array.isArray(r) ? null : (r.next_cursor ?? null);
    if (!cursor) break;
  }
  return out;
}

export function SecretsPicker({ value, onChange, invalid, describedBy }: { value: string[]; onChange: (v: string[]) => void; invalid?: boolean; describedBy?: string }) {
  const secrets = useLoad((s) => allSecretNames(s), []);
  const [pick, setPick] = useState('');
  const names = (secrets.data ?? []).filter((n) => !value.includes(n));
  const add = () => {
    if (!pick || value.includes(pick)) return;
    onChange([...value, pick]);
    setPick('');
  };
  return (
    <div className="layers-picker" data-testid="secrets-picker">
      {value.length === 0 ? (
        <div className="muted small">No secrets.</div>
      ) : (
        <ul className="layer-list" data-testid="secret-list" aria-label="Secrets of this function">
          {value.map((n) => (
            <li key={n} data-testid="secret-entry" data-secret={n}>
              <code>{n}</code>
              <span className="layer-actions">
                <button type="button" className="btn btn-icon btn-small" aria-label={`Remove secret ${n}`} onClick={() => onChange(value.filter((v) => v !== n))}>
                  ×
                </button>
              </span>
            </li>
          ))}
        </ul>
      )}
      <div className="layer-add">
        <select
          id="f-secrets"
          aria-label="Secret"
          value={pick}
          onChange={(e) => setPick(e.target.value)}
          aria-invalid={invalid ? true : undefined}
          aria-describedby={describedBy}
        >
          <option value="">{secrets.loading ? 'Loading secrets…' : names.length ? 'Pick a secret…' : (secrets.data ?? []).length ? 'All your secrets are added' : 'No secrets yet'}</option>
          {names.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
        <button type="button" className="btn btn-small" onClick={add} disabled={!pick}>
          Add secret
        </button>
      </div>
      {secrets.error ? <div className="field-error">Could not load your secrets: {secrets.error instanceof Error ? secrets.error.message : String(secrets.error)}</div> : null}
    </div>
  );
}
