// The signed-in frame: brand, navigation and the account menu. On a narrow screen the
// navigation becomes a scrollable row of tabs under the header.
import type { ReactNode } from 'react';
import { useSession, logout } from '../session';
import { Link, navigate, useLocation } from '../router';
import { useToast } from '../toast';

const NAV = [
  { href: '/functions', label: 'Functions' },
  { href: '/executions', label: 'Executions' },
  { href: '/layers', label: 'Layers' },
  { href: '/keys', label: 'API keys' },
  { href: '/secrets', label: 'Secrets' },
  { href: '/stats', label: 'Statistics' },
];

export function Brand() {
  return (
    <Link href="/" className="brand" aria-label="VoltRun home">
      <svg viewBox="0 0 32 32" width="28" height="28" aria-hidden="true">
        <rect width="32" height="32" rx="7" fill="#4f46e5" />
        <path d="M18 4 8 18h7l-2 10 11-15h-7z" fill="#facc15" />
      </svg>
      <span>VoltRun</span>
    </Link>
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const session = useSession();
  const { pathname } = useLocation();
  const toast = useToast();
  const signOut = async () => {
    // The server revokes the session first, so no reload can bring it back.
    await logout();
    toast('info', 'Signed out');
    navigate('/login');
  };
  return (
    <div className="app">
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <header className="topbar">
        <Brand />
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => {
            const active = pathname === n.href || pathname.startsWith(n.href + '/');
            return (
              <Link key={n.href} href={n.href} className={active ? 'active' : undefined} aria-current={active ? 'page' : undefined}>
                {n.label}
              </Link>
            );
          })}
        </nav>
        <div className="account">
          {session?.user && (
            <span className="account-email" title={session.user.email}>
              {session.user.name || session.user.email}
            </span>
          )}
          <button type="button" className="btn btn-small" onClick={signOut}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" className="content">
        {children}
      </main>
    </div>
  );
}
