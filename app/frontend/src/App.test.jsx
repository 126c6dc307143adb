import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen } from '@testing-library/react';
import { callsTo, fakeResponse, mockFetch } from './test/helpers.js';
import App, { routeFromHash } from './App.jsx';

describe('routeFromHash', () => {
  it('maps hashes to pages, defaulting to upload', () => {
    expect(routeFromHash('')).toBe('upload');
    expect(routeFromHash('#/upload')).toBe('upload');
    expect(routeFromHash('#/chat')).toBe('chat');
    expect(routeFromHash('#chat')).toBe('chat');
    expect(routeFromHash('#/documents')).toBe('documents');
    expect(routeFromHash('#/history?before=3')).toBe('history');
    expect(routeFromHash('#/unknown')).toBe('upload');
    expect(routeFromHash('#/toString')).toBe('upload');
    expect(routeFromHash('#/__proto__')).toBe('upload');
  });
});

/** Render the app logged in (mockFetch answers GET /auth/me as an admin) and wait for it. */
async function renderApp() {
  render(<App />);
  await screen.findByRole('button', { name: 'Log out' });
}

describe('App navigation', () => {
  it('starts on Upload and switches to Chat and back via the tab bar', async () => {
    mockFetch();
    await renderApp();
    const nav = screen.getByRole('navigation', { name: 'Main' });
    expect(nav).toBeTruthy();
    expect(screen.getByLabelText('Schema PDF')).toBeTruthy();
    expect(screen.getByRole('link', { name: 'Upload' }).getAttribute('aria-current')).toBe('page');

    fireEvent.click(screen.getByRole('link', { name: 'Chat' }));
    expect(screen.getByLabelText('Question')).toBeTruthy();
    expect(screen.queryByLabelText('Schema PDF')).toBeNull();
    expect(screen.getByRole('link', { name: 'Chat' }).getAttribute('aria-current')).toBe('page');

    fireEvent.click(screen.getByRole('link', { name: 'Upload' }));
    expect(screen.getByLabelText('Schema PDF')).toBeTruthy();
  });

  it('opens the Chat page directly from #/chat', async () => {
    window.location.hash = '#/chat';
    mockFetch();
    await renderApp();
    expect(screen.getByLabelText('Question')).toBeTruthy();
  });

  it('shares the collection name between pages', async () => {
    mockFetch();
    await renderApp();
    fireEvent.change(screen.getByLabelText('Collection'), { target: { value: 'inventory' } });
    fireEvent.click(screen.getByRole('link', { name: 'Chat' }));
    expect(screen.getByLabelText('Collection').value).toBe('inventory');
  });

  it('keeps e2e labels unambiguous even for substring matching (as Playwright getByLabel does)', async () => {
    mockFetch();
    await renderApp();
    expect(screen.getAllByLabelText(/schema pdf/i)).toHaveLength(1);
    expect(screen.getAllByLabelText(/collection/i)).toHaveLength(1);
    expect(screen.getAllByRole('button', { name: /upload/i })).toHaveLength(1);
    expect(screen.getAllByRole('status')).toHaveLength(1);

    fireEvent.click(screen.getByRole('link', { name: 'Chat' }));
    expect(screen.getAllByLabelText(/question/i)).toHaveLength(1);
    expect(screen.getAllByLabelText(/collection/i)).toHaveLength(1);
    expect(screen.getAllByRole('button', { name: /ask/i })).toHaveLength(1);
    expect(screen.getAllByRole('status')).toHaveLength(1);
  });

  it('opens the Documents page from the tab bar, and a collection chosen there carries over to Chat', async () => {
    mockFetch(
      fakeResponse(200, { collections: [{ name: 'inventory', documents: 0, updated_at: null }] }),
      fakeResponse(200, { collection: 'inventory', documents: [] }),
    );
    await renderApp();
    fireEvent.click(screen.getByRole('link', { name: 'Documents' }));
    expect(screen.getByRole('link', { name: 'Documents' }).getAttribute('aria-current')).toBe('page');
    expect(document.title).toBe('QueryGPT · Documents');
    fireEvent.click(await screen.findByRole('button', { name: /^inventory/ }));
    await screen.findByText('No documents in “inventory”.');
    expect(screen.getAllByRole('status')).toHaveLength(1);

    fireEvent.click(screen.getByRole('link', { name: 'Chat' }));
    expect(screen.getByLabelText('Collection').value).toBe('inventory');
  });

  it('opens the History page directly from #/history', async () => {
    window.location.hash = '#/history';
    const fetchMock = mockFetch(fakeResponse(200, { entries: [], next_before: null }));
    await renderApp();
    expect(screen.getByRole('link', { name: 'History' }).getAttribute('aria-current')).toBe('page');
    await screen.findByText('No questions asked yet.');
    expect(callsTo(fetchMock).map(([, url]) => url)).toEqual(['/api/auth/me', '/api/history?limit=50']);
  });

  it('keeps e2e locators unambiguous on the Documents and History pages', async () => {
    mockFetch(
      fakeResponse(200, { collections: [{ name: 'querygpt', documents: 1, updated_at: null }] }),
      fakeResponse(200, {
        collection: 'querygpt',
        documents: [{ id: 'd1', filename: 'upload.pdf', sha256: 'ab', size: 1, chunks: 1, s3_key: 'k', s3_version_id: null, uploaded_at: null }],
      }),
      fakeResponse(200, { entries: [], next_before: null }),
    );
    await renderApp();
    fireEvent.click(screen.getByRole('link', { name: 'Documents' }));
    await screen.findByRole('button', { name: 'Delete upload.pdf' });
    expect(screen.getAllByRole('status')).toHaveLength(1);
    expect(screen.getAllByRole('table')).toHaveLength(1);
    expect(screen.getAllByRole('button', { name: /^delete/i })).toHaveLength(1);

    fireEvent.click(screen.getByRole('link', { name: 'History' }));
    await screen.findByText('No questions asked yet.');
    expect(screen.getAllByRole('status')).toHaveLength(1);
    expect(screen.getAllByLabelText(/collection/i)).toHaveLength(1);
  });
});
