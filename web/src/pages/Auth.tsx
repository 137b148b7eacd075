// Log in and register. Both store the returned tokens and go on to `?next=` or the functions.
import { useState, type FormEvent } from 'react';
import { api, ApiError, SESSION_HEADERS, setSession, type User } from '../api';
import { Brand } from '../components/Layout';
import { ErrorBox, usePageTitle } from '../components/ui';
import { Link, navigate, useLocation } from '../router';
import { useToast } from '../toast';

/** The refresh token is not here: the server sets it as an HttpOnly cookie (SESSION_HEADERS). */
interface AuthResponse {
  token: string;
  expires_in: number;
  user: User;
}

function safeNext(next: string | null): string {
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/functions';
}

export function AuthPage({ mode }: { mode: 'login' | 'register' }) {
  const register = mode === 'register';
  usePageTitle(register ? 'Create an account' : 'Log in');
  const { search } = useLocation();
  const toast = useToast();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const field = error instanceof ApiError ? error.field : null;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = register ? { email, password, name } : { email, password };
      const r = await api<AuthResponse>('POST', register ? '/api/auth/register' : '/api/auth/login', {
        body,
        auth: false,
        headers: SESSION_HEADERS,
      });
      setSession({ token: r.token, user: r.user }, true);
      toast('success', register ? `Welcome to VoltRun, ${r.user.name || r.user.email}` : 'Signed in');
      navigate(safeNext(search.get('next')), { replace: true });
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const next = search.get('next');
  const other = register ? '/login' : '/register';
  return (
    <div className="auth-page">
      <div className="auth-brand">
        <Brand />
      </div>
      <main id="main" className="card auth-card">
        <h1>{register ? 'Create your account' : 'Log in to VoltRun'}</h1>
        <form onSubmit={submit} noValidate aria-describedby={error ? 'auth-error' : undefined}>
          {register && (
            <div className="field">
              <label htmlFor="name">Name</label>
              <input id="name" name="name" autoComplete="name" value={name} onChange={(e) => setName(e.target.value)} aria-invalid={field === 'name'} />
            </div>
          )}
          <div className="field">
            <label htmlFor="email">Email</label>
            <input
              id="email"
              name="email"
              type="email"
              autoComplete="email"
              required
              autoFocus
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              aria-invalid={field === 'email'}
            />
          </div>
          <div className="field">
            <label htmlFor="password">Password</label>
            <input
              id="password"
              name="password"
              type="password"
              autoComplete={register ? 'new-password' : 'current-password'}
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              aria-invalid={field === 'password'}
              aria-describedby={register ? 'password-hint' : undefined}
            />
            {register && (
              <div id="password-hint" className="hint">
                At least 8 characters.
              </div>
            )}
          </div>
          <div id="auth-error">
            <ErrorBox error={error} />
          </div>
          <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
            {busy ? (register ? 'Creating account…' : 'Logging in…') : register ? 'Create account' : 'Log in'}
          </button>
        </form>
        <p className="auth-switch">
          {register ? 'Already have an account? ' : 'New to VoltRun? '}
          <Link href={next ? `${other}?next=${encodeURIComponent(next)}` : other}>{register ? 'Log in' : 'Create an account'}</Link>
        </p>
      </main>
    </div>
  );
}
