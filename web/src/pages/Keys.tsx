// API keys: create (the key is shown once, with a copy button), list and revoke.
import { useState, type FormEvent } from 'react';
import { api, ApiError, get, type ApiKey, type Page } from '../api';
import { ConfirmButton, CopyButton, Empty, ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { ago, dateTime } from '../format';
import { useToast } from '../toast';

export function Keys() {
  usePageTitle('API keys');
  const toast = useToast();
  const keys = useLoad((s) => get<Page<ApiKey>>('/api/keys', s), []);
  const [name, setName] = useState('');
  const [days, setDays] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<ApiKey | null>(null);

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body: Record<string, unknown> = { name };
      if (days) body.expires_in_days = Number(days);
      const k = await api<ApiKey>('POST', '/api/keys', { body });
      setCreated(k);
      setName('');
      toast('success', `Created key ${k.name}`);
      keys.reload();
    } catch (err) {
      setError(err);
      toast('error', err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  const remove = async (k: ApiKey) => {
    try {
      await api('DELETE', `/api/keys/${encodeURIComponent(k.id)}`);
      toast('success', `Deleted key ${k.name}`);
      if (created?.id === k.id) setCreated(null);
      keys.reload();
    } catch (err) {
      toast('error', err instanceof Error ? err.message : String(err));
    }
  };

  const field = error instanceof ApiError ? error.field : null;
  const items = keys.data?.items ?? [];
  return (
    <div className="page">
      <div className="page-head">
        <h1>API keys</h1>
      </div>
      <p className="muted intro">
        Keys authenticate scripts and the CLI: send <code>Authorization: Bearer vr_…</code> or <code>X-API-Key</code>. A key is shown only once,
        when it is created.
      </p>

      <form className="card key-form" onSubmit={create} noValidate>
        <h2 className="card-title">Create a key</h2>
        <div className="key-form-row">
          <div className="field">
            <label htmlFor="key-name">Name</label>
            <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="e.g. ci" autoComplete="off" aria-invalid={field === 'name' ? true : undefined} />
          </div>
          <div className="field">
            <label htmlFor="key-expiry">Expires</label>
            <select id="key-expiry" value={days} onChange={(e) => setDays(e.target.value)}>
              <option value="">Never</option>
              <option value="7">In 7 days</option>
              <option value="30">In 30 days</option>
              <option value="90">In 90 days</option>
              <option value="365">In a year</option>
            </select>
          </div>
          <button type="submit" className="btn btn-primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create key'}
          </button>
        </div>
        <ErrorBox error={error} />
      </form>

      {created?.key && (
        <div className="card new-key" role="region" aria-label="New API key" data-testid="new-key">
          <h2 className="card-title">Copy your new key now</h2>
          <p>This is the only time <strong>{created.name}</strong> is shown. Store it somewhere safe.</p>
          <div className="key-reveal">
            <input readOnly value={created.key} aria-label="API key" onFocus={(e) => e.target.select()} data-testid="new-key-value" />
            <CopyButton text={created.key} onCopied={(ok) => toast(ok ? 'success' : 'error', ok ? 'Key copied to the clipboard' : 'Copy failed: select the key and copy it by hand')} />
          </div>
          <button type="button" className="btn btn-plain btn-small" onClick={() => setCreated(null)}>
            I have stored it
          </button>
        </div>
      )}

      <div className="card table-card">
        {keys.error ? (
          <ErrorBox error={keys.error} retry={keys.reload} />
        ) : keys.loading && !keys.data ? (
          <Spinner label="Loading keys…" />
        ) : items.length === 0 ? (
          <Empty title="No API keys">
            <p>Create one above to call the API from scripts or the CLI.</p>
          </Empty>
        ) : (
          <div className="table-scroll">
            <table className="table" data-testid="keys-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Prefix</th>
                  <th className="hide-sm">Created</th>
                  <th>Last used</th>
                  <th className="hide-sm">Expires</th>
                  <th>
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((k) => (
                  <tr key={k.id} data-name={k.name}>
                    <td className="strong">{k.name}</td>
                    <td>
                      <code>{k.prefix}…</code>
                    </td>
                    <td className="hide-sm muted" title={k.created_at}>
                      {ago(k.created_at)}
                    </td>
                    <td className="muted">{k.last_used_at ? ago(k.last_used_at) : 'never'}</td>
                    <td className="hide-sm muted">{k.expires_at ? dateTime(k.expires_at) : 'never'}</td>
                    <td className="num">
                      <ConfirmButton small label="Delete" confirmLabel="Delete key" onConfirm={() => void remove(k)} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </div>
  );
}
