// A small client-side router over the History API: the dashboard has a handful of pages, so
// a pattern list in App is enough and keeps a dependency out.
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from 'react';

const EVENT = 'voltrun:navigate';

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  if (to === location.pathname + location.search) return;
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  window.dispatchEvent(new Event(EVENT));
}

export interface Loc {
  pathname: string;
  search: URLSearchParams;
}

function current(): Loc {
  return { pathname: location.pathname, search: new URLSearchParams(location.search) };
}

/** The current location; re-renders on navigation. */
export function useLocation(): Loc {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const update = () => setLoc(current());
    window.addEventListener('popstate', update);
    window.addEventListener(EVENT, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(EVENT, update);
    };
  }, []);
  return loc;
}

/** Replaces some query parameters of the current URL (null removes one). */
export function setQuery(params: Record<string, string | null>, opts: { replace?: boolean } = {}): void {
  const u = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === '') u.delete(k);
    else u.set(k, v);
  }
  const s = u.toString();
  navigate(location.pathname + (s ? `?${s}` : ''), opts);
}

/** An <a> that navigates in-app on a plain click and behaves as a link otherwise. */
export function Link({ href, onClick, ...rest }: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const click = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={click} {...rest} />;
}
