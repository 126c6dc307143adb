import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import App from './App.jsx';
import {
  ADMIN_ME,
  EDITOR_ME,
  VIEWER_ME,
  callsTo,
  fakeResponse,
  mockFetchAs,
  mockRoutes,
} from './test/helpers.js';

const NOT_LOGGED_IN = fakeResponse(401, { detail: 'Not authenticated' }, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
const tabs = () => within(screen.getByRole('navigation', { name: 'Main' })).getAllByRole('link').map((a) => a.textContent);

async function logIn(username = 'root', password = 'correct horse battery') {
  fireEvent.change(await screen.findByLabelText('Username'), { target: { value: username } });
  fireEvent.change(screen.getByLabelText('Password'), { target: { value: password } });
  fireEvent.click(screen.getByRole('button', { name: 'Log in' }));
}

describe('login', () => {
  it('shows the login page when GET /auth/me answers 401', async () => {
    const fetchMock = mockFetchAs(null, NOT_LOGGED_IN);
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(screen.getByLabelText('Username')).toBeTruthy();
    expect(screen.getByLabelText('Password').getAttribute('type')).toBe('password');
    expect(screen.queryByRole('navigation', { name: 'Main' })).toBeNull();
    expect(screen.queryByRole('button', { name: 'Log out' })).toBeNull();
    expect(screen.getByRole('status').textContent).toBe('');
    expect(document.title).toBe('QueryGPT · Log in');
    expect(callsTo(fetchMock).map(([m, u]) => `${m} ${u}`)).toEqual(['GET /api/auth/me']);
  });

  it('logs in, then loads who it is and shows the app with the user and role in the header', async () => {
    const fetchMock = mockFetchAs(
      null,
      NOT_LOGGED_IN,
      fakeResponse(200, { user: { username: 'erin', role: 'editor' }, csrf_token: 'csrf-editor' }),
      fakeResponse(200, EDITOR_ME),
    );
    render(<App />);
    await logIn('  erin ', 'correct horse battery');
    expect(await screen.findByRole('button', { name: 'Log out' })).toBeTruthy();
    expect(screen.getByTestId('whoami-user').textContent).toBe('erin');
    expect(screen.getByTestId('whoami-role').textContent).toBe('(editor)');
    expect(screen.getByLabelText('Schema PDF')).toBeTruthy();

    const [, url, init] = callsTo(fetchMock, 'POST')[0];
    expect(url).toBe('/api/auth/login');
    expect(JSON.parse(init.body)).toEqual({ username: 'erin', password: 'correct horse battery' });
    expect(callsTo(fetchMock, 'GET', '/api/auth/me')).toHaveLength(2);
  });

  it("shows the server's reason for a failed login and clears the password", async () => {
    mockFetchAs(null, NOT_LOGGED_IN, fakeResponse(401, { detail: 'Invalid username or password' }, 'Unauthorized'));
    render(<App />);
    await logIn('root', 'not the password');
    await waitFor(() =>
      expect(screen.getByRole('status').textContent).toBe('Login failed (HTTP 401): Invalid username or password'),
    );
    expect(screen.getByRole('status').getAttribute('aria-live')).toBe('polite');
    expect(screen.getByLabelText('Password').value).toBe('');
    expect(screen.getByLabelText('Username').value).toBe('root');
    expect(screen.queryByRole('navigation', { name: 'Main' })).toBeNull();
  });

  it('says how long to wait after too many failures (429 with Retry-After)', async () => {
    mockFetchAs(
      null,
      NOT_LOGGED_IN,
      fakeResponse(429, { detail: 'Too many failed logins for this user' }, 'Too Many Requests', { 'Retry-After': '840' }),
    );
    render(<App />);
    await logIn();
    await waitFor(() =>
      expect(screen.getByRole('status').textContent).toBe(
        'Too many failed logins: Too many failed logins for this user. Try again in 14 minutes.',
      ),
    );
  });

  it('does not call the server without a username and password', async () => {
    const fetchMock = mockFetchAs(null, NOT_LOGGED_IN);
    render(<App />);
    fireEvent.click(await screen.findByRole('button', { name: 'Log in' }));
    expect(screen.getByRole('status').textContent).toBe('Enter your username and password.');
    expect(fetchMock).toHaveBeenCalledTimes(1);
  });
});

describe('session', () => {
  it('sends the CSRF token from GET /auth/me on a write, and not on a GET', async () => {
    const fetchMock = mockRoutes({
      'GET /api/auth/me': { ...EDITOR_ME, csrf_token: 'csrf-from-me' },
      'GET /api/collections': {
        collections: [
          { name: 'querygpt', documents: 0, updated_at: null },
          { name: 'sales', documents: 1, updated_at: null },
        ],
      },
      'GET /api/collections/sales/documents': {
        collection: 'sales',
        documents: [{ id: 'd1', filename: 'a.pdf', sha256: 'ab', size: 1, chunks: 1, uploaded_at: null }],
      },
      'GET /api/collections/querygpt/documents': { collection: 'querygpt', documents: [] },
      'DELETE /api/documents/d1': { id: 'd1', collection: 'sales', filename: 'a.pdf', chunks_removed: 1 },
    });
    window.location.hash = '#/documents';
    render(<App />);
    fireEvent.click(await screen.findByRole('button', { name: /^sales/ }));
    fireEvent.click(await screen.findByRole('button', { name: 'Delete a.pdf' }));
    fireEvent.click(screen.getByRole('button', { name: 'Delete permanently' }));
    await screen.findByText(/Deleted a.pdf/);

    const [, , del] = callsTo(fetchMock, 'DELETE')[0];
    expect(del.headers['X-CSRF-Token']).toBe('csrf-from-me');
    expect(del.credentials).toBe('same-origin');
    const gets = callsTo(fetchMock, 'GET');
    expect(gets.length).toBeGreaterThan(2);
    for (const [, , init] of gets) expect(init.headers['X-CSRF-Token']).toBeUndefined();
  });

  it('returns to the login page with the reason on a 401 mid-session, and back to the same page after logging in', async () => {
    let meCalls = 0;
    mockRoutes({
      'GET /api/auth/me': () => (meCalls++ === 0 ? VIEWER_ME : { ...VIEWER_ME, csrf_token: 'csrf-2' }),
      'POST /api/query': fakeResponse(401, { detail: 'Session expired' }, 'Unauthorized'),
      'POST /api/auth/login': { user: { username: 'vic', role: 'viewer' }, csrf_token: 'csrf-2' },
    });
    window.location.hash = '#/chat';
    render(<App />);
    fireEvent.change(await screen.findByLabelText('Question'), { target: { value: 'How many rows?' } });
    fireEvent.click(screen.getByRole('button', { name: 'Ask' }));

    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(screen.getByRole('status').textContent).toBe(
      'Your session has ended (Session expired). Log in again to continue.',
    );
    expect(screen.queryByRole('navigation', { name: 'Main' })).toBeNull();

    await logIn('vic', 'correct horse battery');
    expect(await screen.findByLabelText('Question')).toBeTruthy();
    expect(screen.getByRole('link', { name: 'Chat' }).getAttribute('aria-current')).toBe('page');
  });

  it('logs out: POST /auth/logout with the CSRF token, then the login page', async () => {
    const fetchMock = mockFetchAs(ADMIN_ME, fakeResponse(204, null, 'No Content'));
    render(<App />);
    fireEvent.click(await screen.findByRole('button', { name: 'Log out' }));
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(screen.getByRole('status').textContent).toBe('You have logged out.');
    const [, url, init] = callsTo(fetchMock, 'POST')[0];
    expect(url).toBe('/api/auth/logout');
    expect(init.headers['X-CSRF-Token']).toBe('csrf-admin');
  });
});

describe('what each role is offered', () => {
  const COLLECTIONS = {
    collections: [
      { name: 'querygpt', documents: 1, updated_at: null },
      { name: 'sales', documents: 1, updated_at: null },
    ],
  };
  const docs = (collection) => ({
    collection,
    documents: [{ id: `${collection}-1`, filename: `${collection}.pdf`, sha256: 'ab', size: 1, chunks: 1, uploaded_at: null }],
  });
  const routes = (who) => ({
    'GET /api/auth/me': who,
    'GET /api/collections': COLLECTIONS,
    'GET /api/collections/querygpt/documents': docs('querygpt'),
    'GET /api/collections/sales/documents': docs('sales'),
  });

  it('viewer: no Upload tab, no Admin tab, no delete; Chat offers only readable collections', async () => {
    mockRoutes(routes(VIEWER_ME));
    render(<App />);
    await screen.findByRole('button', { name: 'Log out' });
    expect(tabs()).toEqual(['Chat', 'Documents', 'History', 'Tokens']);
    // The default route (#/upload) is not offered, so the first allowed page opens.
    expect(screen.getByRole('link', { name: 'Chat' }).getAttribute('aria-current')).toBe('page');
    const picker = screen.getByLabelText('Collection');
    expect(picker.tagName).toBe('SELECT');
    expect([...picker.options].map((o) => o.value)).toEqual(['querygpt']);

    window.location.hash = '#/upload';
    fireEvent(window, new HashChangeEvent('hashchange'));
    expect(screen.queryByLabelText('Schema PDF')).toBeNull();

    fireEvent.click(screen.getByRole('link', { name: 'Documents' }));
    await screen.findByRole('cell', { name: 'querygpt.pdf' });
    expect(screen.queryByRole('button', { name: /^Delete/ })).toBeNull();
    expect(screen.getByTestId('read-only')).toBeTruthy();
  });

  it('editor with write on one collection: Upload offers only it, delete only there', async () => {
    mockRoutes(routes(EDITOR_ME));
    render(<App />);
    await screen.findByRole('button', { name: 'Log out' });
    expect(tabs()).toEqual(['Upload', 'Chat', 'Documents', 'History', 'Tokens']);
    const upload = screen.getByLabelText('Collection');
    expect([...upload.options].map((o) => o.value)).toEqual(['sales']);
    expect(upload.value).toBe('sales');

    fireEvent.click(screen.getByRole('link', { name: 'Chat' }));
    expect([...screen.getByLabelText('Collection').options].map((o) => o.value)).toEqual(['querygpt', 'sales']);

    fireEvent.click(screen.getByRole('link', { name: 'Documents' }));
    // The shared collection ("sales", picked on Upload) opens first: delete is offered.
    expect(await screen.findByRole('button', { name: 'Delete sales.pdf' })).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: /^querygpt/ }));
    await screen.findByRole('cell', { name: 'querygpt.pdf' });
    expect(screen.queryByRole('button', { name: /^Delete/ })).toBeNull();
  });

  it('admin: every tab, free-text collection, delete everywhere', async () => {
    mockRoutes(routes(ADMIN_ME));
    render(<App />);
    await screen.findByRole('button', { name: 'Log out' });
    expect(tabs()).toEqual(['Upload', 'Chat', 'Documents', 'History', 'Tokens', 'Admin']);
    expect(screen.getByLabelText('Collection').tagName).toBe('INPUT');
    fireEvent.click(screen.getByRole('link', { name: 'Documents' }));
    expect(await screen.findByRole('button', { name: 'Delete querygpt.pdf' })).toBeTruthy();
  });

  it("still shows a 403's reason when the server refuses", async () => {
    mockRoutes({
      ...routes(EDITOR_ME),
      'POST /api/upload': fakeResponse(403, { detail: "No write grant on collection 'sales'" }, 'Forbidden'),
    });
    render(<App />);
    const file = new File(['%PDF-1.4'], 'x.pdf', { type: 'application/pdf' });
    fireEvent.change(await screen.findByLabelText('Schema PDF'), { target: { files: [file] } });
    fireEvent.click(screen.getByRole('button', { name: 'Upload' }));
    await waitFor(() =>
      expect(screen.getByRole('status').textContent).toBe("Upload failed (HTTP 403): No write grant on collection 'sales'"),
    );
    expect(screen.getByRole('button', { name: 'Log out' })).toBeTruthy();
  });
});
