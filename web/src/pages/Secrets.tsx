// Secrets (issue 16): set (create, or replace the value of one that exists), list and delete.
// Values are write-only: the API never returns them, and this page never shows one it did
// not just have typed in (the input is cleared after each save).
import { useState, type FormEvent } from 'react';
import { api, ApiError, get, type Page, type Secret } from '../api';
import { ConfirmButton, Empty, ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { ago } from '../format';
import { useToast } from '../toast';

const NAME_RULE = /^[A-Z_][A-Z0-9_]{0,127}$/;

export function Secrets() {
  usePageTitle('Secrets');
  const toast = useToast();
  const secrets = useLoad((s) => get<Page<Secret>>('/api/secrets', s), []);
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const items = secrets.data?.items ?? [];
  const exists = items.some((s) => s.name === name);

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (!NAME_RULE.test(name)) {
      setError(new Error('Name: upper-case letters, digits and _, not starting with a digit (e.g. API_TOKEN)'));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      if (exists) await api('PUT', `/api/secrets/${encodeURIComponent(name)}`, { body: { value } });
      else await api('POST', '/api/secrets', { body: { name, value } });
      toast('success', exists ? `Updated ${name}: the next run of every function using it sees the new value` : `Created secret ${name}`);
      setName('');
      setValue('');
      secrets.reload();
    } catch (err) {
      setError(err);
      toast('error', err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  const remove = async (s: Secret) => {
    try {
      await api('DELETE', `/api/secrets/${encodeURIComponent(s.name)}`);
      toast('success', `Deleted secret ${s.name}`);
      secrets.reload();
    } catch (err) {
      toast('error', err instanceof Error ? err.message : String(err));
    }
  };

  const field = error instanceof ApiError ? error.field : null;
  return (
    <div className="page">
      <div className="page-head">
        <h1>Secrets</h1>
      </div>
      <p className="muted intro">
        A function lists the secrets it needs in <code>secrets</code>, and each run gets them as environment variables. Values are encrypted at
        rest and can be replaced but never read back.
      </p>

      <form className="card key-form" onSubmit={save} noValidate data-testid="secret-form">
        <h2 className="card-title">{exists ? `Replace the value of ${name}` : 'Set a secret'}</h2>
        <div className="key-form-row">
          <div className="field">
            <label htmlFor="secret-name">Name</label>
            <input
              id="secret-name"
              value={name}
              onChange={(e) => setName(e.target.value.toUpperCase())}
              placeholder="e.g. API_TOKEN"
              autoComplete="off"
              spellCheck={false}
              aria-invalid={field === 'name' ? true : undefined}
            />
          </div>
          <div className="field">
            <label htmlFor="secret-value">Value</label>
            <input
              id="secret-value"
              type="password"
              value={value}
              onChange={(e) => setValue(e.target.value)}
              autoComplete="new-password"
              aria-invalid={field === 'value' ? true : undefined}
            />
          </div>
          <button type="submit" className="btn btn-primary" disabled={busy || !name}>
            {busy ? 'Saving…' : exists ? 'Replace value' : 'Create secret'}
          </button>
        </div>
        <ErrorBox error={error} />
      </form>

      <div className="card table-card">
        {secrets.error ? (
          <ErrorBox error={secrets.error} retry={secrets.reload} />
        ) : secrets.loading && !secrets.data ? (
          <Spinner label="Loading secrets…" />
        ) : items.length === 0 ? (
          <Empty title="No secrets">
            <p>Set one above, then name it in a function's secrets.</p>
          </Empty>
        ) : (
          <div className="table-scroll">
            <table className="table" data-testid="secrets-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Value</th>
                  <th className="hide-sm">Created</th>
                  <th>Updated</th>
                  <th>
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((s) => (
                  <tr key={s.name} data-name={s.name}>
                    <td className="strong">
                      <code>{s.name}</code>
                    </td>
                    <td className="muted">hidden</td>
                    <td className="hide-sm muted" title={s.created_at}>
                      {ago(s.created_at)}
                    </td>
                    <td className="muted" title={s.updated_at}>
                      {ago(s.updated_at)}
                    </td>
                    <td className="num">
                      <button type="button" className="btn btn-plain btn-small" onClick={() => setName(s.name)}>
                        Replace
                      </button>{' '}
                      <ConfirmButton small label="Delete" confirmLabel="Delete secret" onConfirm={() => void remove(s)} />
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
