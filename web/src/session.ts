// React view of the API session.
import { useSyncExternalStore } from 'react';
import { getSession, onSessionChange, setSession, type Session } from './api';

export function useSession(): Session | null {
  return useSyncExternalStore(onSessionChange, getSession);
}

export function logout(): void {
  setSession(null);
}
