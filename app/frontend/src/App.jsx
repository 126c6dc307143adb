import { useCallback, useEffect, useState } from 'react';
import { DEFAULT_COLLECTION, logout, me, onUnauthorized } from './api.js';
import { accessFor } from './components/access.js';
import { describeError } from './components/format.js';
import UploadPage from './pages/UploadPage.jsx';
import ChatPage from './pages/ChatPage.jsx';
import DocumentsPage from './pages/DocumentsPage.jsx';
import HistoryPage from './pages/HistoryPage.jsx';
import TokensPage from './pages/TokensPage.jsx';
import AdminPage from './pages/AdminPage.jsx';
import LoginPage from './pages/LoginPage.jsx';

// Minimal hash routing: #/upload (default), #/chat, #/documents, #/history, #/tokens, #/admin.
// No router dependency.
const ROUTES = {
  upload: { label: 'Upload', hash: '#/upload' },
  chat: { label: 'Chat', hash: '#/chat' },
  documents: { label: 'Documents', hash: '#/documents' },
  history: { label: 'History', hash: '#/history' },
  tokens: { label: 'Tokens', hash: '#/tokens' },
  admin: { label: 'Admin', hash: '#/admin' },
};

export function routeFromHash(hash) {
  const name = String(hash ?? '').replace(/^#\/?/, '').split(/[/?]/)[0];
  // Own keys only: `#/toString` must not resolve to an Object.prototype member.
  return Object.hasOwn(ROUTES, name) ? name : 'upload';
}

/** The tabs a user is offered: Upload needs write somewhere (admin: always), Admin is admin only. */
export function allowedRoutes(access) {
  return Object.keys(ROUTES).filter((name) => {
    if (name === 'upload') return access.canUpload;
    if (name === 'admin') return access.isAdmin;
    return true;
  });
}

function Page({ route, who, access, collection, setCollection }) {
  switch (route) {
    case 'upload':
      return (
        <UploadPage
          collection={collection}
          onCollectionChange={setCollection}
          collections={access.isAdmin ? null : access.writable}
        />
      );
    case 'chat':
      return (
        <ChatPage
          collection={collection}
          onCollectionChange={setCollection}
          collections={access.isAdmin ? null : access.readable}
        />
      );
    case 'documents':
      return (
        <DocumentsPage
          collection={collection}
          onCollectionChange={setCollection}
          canWrite={access.canWrite}
          canUpload={access.canUpload}
        />
      );
    case 'history':
      return <HistoryPage />;
    case 'tokens':
      return <TokensPage isAdmin={access.isAdmin} />;
    case 'admin':
      return <AdminPage currentUser={who.username} />;
    default:
      return null;
  }
}

export default function App() {
  const [route, setRoute] = useState(() => routeFromHash(window.location.hash));
  const [collection, setCollection] = useState(DEFAULT_COLLECTION);
  // {phase: 'checking'} | {phase: 'login', message, seq} | {phase: 'ready', me}
  const [session, setSession] = useState({ phase: 'checking' });

  const toLogin = useCallback((message) => {
    setSession((s) => ({ phase: 'login', message, seq: (s.seq ?? 0) + 1 }));
  }, []);

  // Any 401 mid-session (expired, logged out elsewhere, user disabled): back to the login page,
  // with the server's reason. Route and collection stay, so logging in again returns there.
  // A late 401 (a request still in flight at logout) does not replace the login page's message.
  useEffect(
    () =>
      onUnauthorized((err) => {
        const message = `Your session has ended (${err?.message || 'not authenticated'}). Log in again to continue.`;
        setSession((s) => (s.phase === 'ready' ? { phase: 'login', message, seq: (s.seq ?? 0) + 1 } : s));
      }),
    [],
  );

  /** GET /auth/me: who is logged in (with grants and the CSRF token), or the login page. */
  const loadSession = useCallback(
    async (signal) => {
      try {
        const who = await me({ signal });
        setSession({ phase: 'ready', me: who });
      } catch (err) {
        if (err?.name === 'AbortError') return;
        toLogin(err?.status === 401 ? null : describeError('Checking your session', err));
      }
    },
    [toLogin],
  );

  useEffect(() => {
    const controller = new AbortController();
    loadSession(controller.signal);
    return () => controller.abort();
  }, [loadSession]);

  useEffect(() => {
    const onHashChange = () => setRoute(routeFromHash(window.location.hash));
    window.addEventListener('hashchange', onHashChange);
    return () => window.removeEventListener('hashchange', onHashChange);
  }, []);

  async function onLogout() {
    let message = 'You have logged out.';
    try {
      await logout();
    } catch (err) {
      if (err?.status !== 401) {
        message = `${describeError('Logging out', err)}. The server may still hold your session until it expires.`;
      }
    }
    toLogin(message);
  }

  const ready = session.phase === 'ready';
  const access = ready ? accessFor(session.me) : null;
  const allowed = access ? allowedRoutes(access) : [];
  const shown = allowed.includes(route) ? route : allowed[0];

  useEffect(() => {
    if (session.phase === 'login') document.title = 'QueryGPT · Log in';
    else if (ready && shown) document.title = `QueryGPT · ${ROUTES[shown].label}`;
    else document.title = 'QueryGPT';
  }, [session.phase, ready, shown]);

  return (
    <div className="app">
      <header className="app-header">
        <h1>QueryGPT</h1>
        {ready && (
          <>
            <nav aria-label="Main">
              <ul className="tabs">
                {allowed.map((name) => (
                  <li key={name}>
                    <a
                      href={ROUTES[name].hash}
                      className={shown === name ? 'tab active' : 'tab'}
                      aria-current={shown === name ? 'page' : undefined}
                      onClick={() => setRoute(name)}
                    >
                      {ROUTES[name].label}
                    </a>
                  </li>
                ))}
              </ul>
            </nav>
            <div className="whoami">
              <span>
                Signed in as <strong data-testid="whoami-user">{session.me.username}</strong>{' '}
                <span className="role" data-testid="whoami-role">
                  ({session.me.role})
                </span>
              </span>
              <button type="button" className="secondary small" onClick={onLogout}>
                Log out
              </button>
            </div>
          </>
        )}
      </header>
      <main>
        {session.phase === 'checking' && (
          <p className="hint" role="status" aria-live="polite">
            Checking your session…
          </p>
        )}
        {session.phase === 'login' && (
          <LoginPage key={session.seq} message={session.message} onLoggedIn={() => loadSession()} />
        )}
        {ready && (
          <Page route={shown} who={session.me} access={access} collection={collection} setCollection={setCollection} />
        )}
      </main>
    </div>
  );
}
