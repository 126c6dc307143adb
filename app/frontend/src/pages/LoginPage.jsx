import { useEffect, useId, useRef, useState } from 'react';
import { login, retryAfterInWords } from '../api.js';

export function describeLoginError(err) {
  const reason = err?.message || 'Unknown error';
  if (err?.status === 429) {
    const wait = retryAfterInWords(err.retryAfter);
    return `Too many failed logins: ${reason}. ${wait ? `Try again in ${wait}.` : 'Try again later.'}`;
  }
  return err?.status ? `Login failed (HTTP ${err.status}): ${reason}` : `Login failed: ${reason}`;
}

/**
 * Username and password. `message` says why the page is shown (logged out, session ended);
 * `onLoggedIn(loginResponse)` runs after a successful POST /auth/login.
 */
export default function LoginPage({ message = null, onLoggedIn }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [state, setState] = useState(message ? { phase: 'info', message } : { phase: 'idle' });
  const inFlight = useRef(false);
  const userRef = useRef(null);
  const userId = useId();
  const passwordId = useId();
  const busy = state.phase === 'busy';

  useEffect(() => {
    userRef.current?.focus();
  }, []);

  async function onSubmit(event) {
    event.preventDefault();
    if (inFlight.current) return;
    const name = username.trim();
    if (!name || !password) {
      setState({ phase: 'error', message: 'Enter your username and password.' });
      return;
    }
    inFlight.current = true;
    setState({ phase: 'busy', message: 'Logging in…' });
    try {
      const data = await login(name, password);
      setPassword('');
      setState({ phase: 'idle' });
      await onLoggedIn?.(data);
    } catch (err) {
      setPassword('');
      setState({ phase: 'error', message: describeLoginError(err) });
    } finally {
      inFlight.current = false;
    }
  }

  return (
    <section className="page login">
      <h2>Log in</h2>
      <form onSubmit={onSubmit} noValidate>
        <div className="field">
          <label htmlFor={userId}>Username</label>
          <input
            id={userId}
            ref={userRef}
            name="username"
            type="text"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            disabled={busy}
          />
        </div>
        <div className="field">
          <label htmlFor={passwordId}>Password</label>
          <input
            id={passwordId}
            name="password"
            type="password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            autoComplete="current-password"
            disabled={busy}
          />
        </div>
        <button type="submit" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
      <div role="status" aria-live="polite" className="status">
        {state.message && <span className={state.phase === 'error' ? 'error' : undefined}>{state.message}</span>}
      </div>
    </section>
  );
}
