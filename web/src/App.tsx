// Routes: the public pages, and the signed-in pages inside the Layout.
import { useEffect } from 'react';
import { get, getSession, setSession, type User } from './api';
import { Layout } from './components/Layout';
import { AuthPage } from './pages/Auth';
import { Executions } from './pages/Executions';
import { FunctionForm } from './pages/FunctionForm';
import { FunctionPage } from './pages/FunctionPage';
import { Functions } from './pages/Functions';
import { Keys } from './pages/Keys';
import { Secrets } from './pages/Secrets';
import { Landing } from './pages/Landing';
import { Layers } from './pages/Layers';
import { NotFound } from './pages/NotFound';
import { Stats } from './pages/Stats';
import { navigate, useLocation } from './router';
import { useSession, useSessionReady } from './session';

function signedInPage(pathname: string) {
  if (pathname === '/functions') return <Functions />;
  if (pathname === '/functions/new') return <FunctionForm />;
  let m = /^\/functions\/([^/]+)\/edit$/.exec(pathname);
  if (m) return <FunctionForm id={decodeURIComponent(m[1])} />;
  m = /^\/functions\/([^/]+)$/.exec(pathname);
  if (m) return <FunctionPage key={m[1]} id={decodeURIComponent(m[1])} />;
  if (pathname === '/executions') return <Executions />;
  if (pathname === '/layers') return <Layers />;
  if (pathname === '/keys') return <Keys />;
  if (pathname === '/secrets') return <Secrets />;
  if (pathname === '/stats') return <Stats />;
  return null;
}

export function App() {
  const { pathname, search } = useLocation();
  const session = useSession();
  const ready = useSessionReady();
  const page = signedInPage(pathname.replace(/\/+$/, '') || '/');

  useEffect(() => {
    window.scrollTo(0, 0);
  }, [pathname]);

  // A signed-in page without a session goes to the login page, and back after.
  useEffect(() => {
    if (ready && page && !session) {
      const next = pathname + (search.toString() ? `?${search}` : '');
      navigate(`/login?next=${encodeURIComponent(next)}`, { replace: true });
    }
  }, [ready, page, session, pathname, search]);

  // Sessions stored before the user was known: fetch it once.
  useEffect(() => {
    if (session && !session.user) {
      get<User>('/api/auth/me')
        .then((user) => {
          const s = getSession();
          if (s) setSession({ ...s, user });
        })
        .catch(() => {});
    }
  }, [session]);

  // Until the session is restored from its cookie, a signed-in page waits (no flash of the login page).
  if (!ready && page) return null;
  if (pathname === '/') return <Landing />;
  if (pathname === '/login') return <AuthPage key="login" mode="login" />;
  if (pathname === '/register') return <AuthPage key="register" mode="register" />;
  if (!page) {
    return session ? (
      <Layout>
        <NotFound />
      </Layout>
    ) : (
      <div className="auth-page">
        <NotFound />
      </div>
    );
  }
  if (!session) return null;
  return <Layout>{page}</Layout>;
}
