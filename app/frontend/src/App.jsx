import { useEffect, useState } from 'react';
import { DEFAULT_COLLECTION } from './api.js';
import UploadPage from './pages/UploadPage.jsx';
import ChatPage from './pages/ChatPage.jsx';
import DocumentsPage from './pages/DocumentsPage.jsx';
import HistoryPage from './pages/HistoryPage.jsx';

// Minimal hash routing: #/upload (default), #/chat, #/documents, #/history. No router dependency.
const ROUTES = {
  upload: { label: 'Upload', hash: '#/upload' },
  chat: { label: 'Chat', hash: '#/chat' },
  documents: { label: 'Documents', hash: '#/documents' },
  history: { label: 'History', hash: '#/history' },
};

const PAGES = {
  upload: UploadPage,
  chat: ChatPage,
  documents: DocumentsPage,
  history: HistoryPage,
};

export function routeFromHash(hash) {
  const name = String(hash ?? '').replace(/^#\/?/, '').split(/[/?]/)[0];
  // Own keys only: `#/toString` must not resolve to an Object.prototype member.
  return Object.hasOwn(ROUTES, name) ? name : 'upload';
}

export default function App() {
  const [route, setRoute] = useState(() => routeFromHash(window.location.hash));
  const [collection, setCollection] = useState(DEFAULT_COLLECTION);

  useEffect(() => {
    const onHashChange = () => setRoute(routeFromHash(window.location.hash));
    window.addEventListener('hashchange', onHashChange);
    return () => window.removeEventListener('hashchange', onHashChange);
  }, []);

  useEffect(() => {
    document.title = `QueryGPT · ${ROUTES[route].label}`;
  }, [route]);

  const Page = PAGES[route];

  return (
    <div className="app">
      <header className="app-header">
        <h1>QueryGPT</h1>
        <nav aria-label="Main">
          <ul className="tabs">
            {Object.entries(ROUTES).map(([name, r]) => (
              <li key={name}>
                <a
                  href={r.hash}
                  className={route === name ? 'tab active' : 'tab'}
                  aria-current={route === name ? 'page' : undefined}
                  onClick={() => setRoute(name)}
                >
                  {r.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
      </header>
      <main>
        <Page collection={collection} onCollectionChange={setCollection} />
      </main>
    </div>
  );
}
