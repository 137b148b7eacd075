// React view of the API session.
import { useSyncExternalStore } from 'react';
import { getSession, isSessionReady, logout as endSession, onSessionChange, type Session } from './api';

export function useSession(): Session | null {
  return useSyncExternalStore(onSessionChange, getSession);
}

/** False while the page load's session restore (from the cookie) is under way. */
export function useSessionReady(): boolean {
  return useSyncExternalStore(onSessionChange, isSessionReady);
}

export function logout(): Promise<void> {
  return endSession();
}
