import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import DocumentsPage from './DocumentsPage.jsx';
import { deferred, fakeResponse, mockFetch } from '../test/helpers.js';

const SHA = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
const SCHEMA = {
  id: '0b7e2c1a-1111-4a4a-8888-000000000001',
  filename: 'schema.pdf',
  sha256: SHA,
  size: 1536,
  chunks: 12,
  s3_key: 'sales/schema.pdf',
  s3_version_id: 'v2',
  uploaded_at: '2026-01-02T03:04:05Z',
};
const ORDERS = { ...SCHEMA, id: '0b7e2c1a-1111-4a4a-8888-000000000002', filename: 'orders.pdf', size: 3 * 1024 * 1024, chunks: 40, sha256: 'ab'.repeat(32) };

const collections = (...items) => fakeResponse(200, { collections: items });
const documents = (collection, ...docs) => fakeResponse(200, { collection, documents: docs });

/** Render with collections [querygpt (1), sales (2)] and open "sales". */
async function openSales(...after) {
  const fetchMock = mockFetch(
    collections(
      { name: 'querygpt', documents: 1, updated_at: null },
      { name: 'sales', documents: 2, updated_at: '2026-01-02T03:04:05Z' },
    ),
    // querygpt is the default shared collection, so it opens first.
    documents('querygpt', { ...SCHEMA, id: 'q1', filename: 'default.pdf' }),
    documents('sales', SCHEMA, ORDERS),
    ...after,
  );
  render(<DocumentsPage />);
  fireEvent.click(await screen.findByRole('button', { name: /^sales/ }));
  await screen.findByRole('cell', { name: 'orders.pdf' });
  return fetchMock;
}

describe('DocumentsPage', () => {
  it('shows a loading state, then the collections with their document counts', async () => {
    const pending = deferred();
    const fetchMock = mockFetch();
    fetchMock.mockReturnValueOnce(pending.promise);
    render(<DocumentsPage />);
    expect(screen.getByRole('status').textContent).toBe('Loading collections…');

    pending.resolve(collections({ name: 'sales', documents: 2, updated_at: null }, { name: 'hr', documents: 1, updated_at: null }));
    const list = await screen.findByTestId('collections');
    const buttons = within(list).getAllByRole('button');
    expect(buttons.map((b) => b.textContent)).toEqual(['sales (2 documents)', 'hr (1 document)']);
    expect(buttons.every((b) => b.getAttribute('aria-pressed') === 'false')).toBe(true);
    expect(fetchMock.mock.calls[0][0]).toBe('/api/collections');
    // "querygpt" (the shared default) is not in the list, so nothing is opened.
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(screen.getByRole('status').textContent).toBe('');
  });

  it('says so when there are no collections', async () => {
    mockFetch(collections());
    render(<DocumentsPage />);
    expect((await screen.findByTestId('no-collections')).textContent).toMatch(/No collections yet/);
  });

  it("shows the server's reason when the collections cannot be loaded", async () => {
    mockFetch(fakeResponse(503, { detail: 'database unavailable' }, 'Service Unavailable'));
    render(<DocumentsPage />);
    expect((await screen.findByRole('alert')).textContent).toBe(
      'Loading collections failed (HTTP 503): database unavailable',
    );
  });

  it('lists the documents of the selected collection in a table with headers', async () => {
    const fetchMock = await openSales();
    expect(fetchMock.mock.calls[2][0]).toBe('/api/collections/sales/documents');
    expect(screen.getByRole('button', { name: /^sales/ }).getAttribute('aria-pressed')).toBe('true');

    const table = screen.getByRole('table', { name: 'Documents in “sales”' });
    const headers = within(table).getAllByRole('columnheader').map((h) => h.textContent);
    expect(headers).toEqual(['File', 'Size', 'Chunks', 'Uploaded', 'SHA-256', 'Actions']);
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows).toHaveLength(2);
    const cells = within(rows[0]).getAllByRole('cell').map((c) => c.textContent);
    expect(cells.slice(0, 5)).toEqual([
      'schema.pdf',
      '1.5 KiB',
      '12',
      new Date('2026-01-02T03:04:05Z').toLocaleString(),
      SHA.slice(0, 12),
    ]);
    expect(rows[0].querySelector('time').getAttribute('datetime')).toBe('2026-01-02T03:04:05Z');
    expect(rows[0].querySelector('code').getAttribute('title')).toBe(SHA);
    expect(within(rows[1]).getByRole('cell', { name: '3.0 MiB' })).toBeTruthy();
    expect(within(rows[1]).getByRole('button', { name: 'Delete orders.pdf' })).toBeTruthy();
  });

  it('opens the shared collection first and URL-encodes collection names', async () => {
    const fetchMock = mockFetch(
      collections({ name: 'a b/c', documents: 0, updated_at: null }),
      documents('a b/c'),
    );
    const onChange = () => {};
    render(<DocumentsPage collection="a b/c" onCollectionChange={onChange} />);
    expect((await screen.findByTestId('no-documents')).textContent).toBe('No documents in “a b/c”.');
    expect(fetchMock.mock.calls[1][0]).toBe('/api/collections/a%20b%2Fc/documents');
  });

  it("shows the server's reason when a collection's documents cannot be loaded", async () => {
    mockFetch(
      collections({ name: 'gone', documents: 1, updated_at: null }),
      fakeResponse(404, { detail: "Collection 'gone' not found" }, 'Not Found'),
    );
    render(<DocumentsPage />);
    fireEvent.click(await screen.findByRole('button', { name: /^gone/ }));
    expect((await screen.findByRole('alert')).textContent).toBe(
      "Loading documents failed (HTTP 404): Collection 'gone' not found",
    );
  });

  it('asks for confirmation naming the file, and Cancel deletes nothing', async () => {
    const fetchMock = await openSales();
    fireEvent.click(screen.getByRole('button', { name: 'Delete schema.pdf' }));

    const dialog = screen.getByRole('alertdialog', { name: 'Delete schema.pdf?' });
    expect(dialog.textContent).toMatch(/schema\.pdf/);
    expect(dialog.textContent).toMatch(/every\s+stored version/);
    expect(dialog.textContent).toMatch(/excerpts of it kept in question history/);
    // The safe choice has the focus.
    expect(document.activeElement).toBe(within(dialog).getByRole('button', { name: 'Cancel' }));

    fireEvent.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(screen.queryByRole('alertdialog')).toBeNull();
    expect(screen.getByRole('status').textContent).toBe('Kept schema.pdf; nothing was deleted.');
    expect(fetchMock).toHaveBeenCalledTimes(3);
    expect(fetchMock.mock.calls.some(([, init]) => init?.method === 'DELETE')).toBe(false);
  });

  it('Escape cancels the confirmation', async () => {
    await openSales();
    fireEvent.click(screen.getByRole('button', { name: 'Delete orders.pdf' }));
    fireEvent.keyDown(screen.getByRole('button', { name: 'Cancel' }), { key: 'Escape' });
    expect(screen.queryByRole('alertdialog')).toBeNull();
  });

  it('deletes after confirmation, reports what was removed and refreshes the lists', async () => {
    const pending = deferred();
    const fetchMock = await openSales();
    fetchMock
      .mockReturnValueOnce(pending.promise)
      // The refresh reloads the collections (for the counts), then the documents.
      .mockResolvedValueOnce(
        collections(
          { name: 'querygpt', documents: 1, updated_at: null },
          { name: 'sales', documents: 1, updated_at: '2026-01-03T00:00:00Z' },
        ),
      )
      .mockResolvedValueOnce(documents('sales', ORDERS));

    fireEvent.click(screen.getByRole('button', { name: 'Delete schema.pdf' }));
    fireEvent.click(screen.getByRole('button', { name: 'Delete permanently' }));

    expect(screen.getByRole('status').textContent).toBe('Deleting schema.pdf…');
    expect(screen.getByRole('button', { name: 'Deleting…' }).disabled).toBe(true);
    expect(screen.getByRole('button', { name: 'Delete orders.pdf' }).disabled).toBe(true);
    const [url, init] = fetchMock.mock.calls[3];
    expect(url).toBe(`/api/documents/${SCHEMA.id}`);
    expect(init.method).toBe('DELETE');

    pending.resolve(
      fakeResponse(200, {
        id: SCHEMA.id,
        collection: 'sales',
        filename: 'schema.pdf',
        chunks_removed: 12,
        s3_versions_removed: 2,
        history_entries_scrubbed: 1,
      }),
    );

    await waitFor(() => expect(screen.queryByRole('cell', { name: 'schema.pdf' })).toBeNull());
    expect(screen.getByRole('status').textContent).toBe(
      'Deleted schema.pdf from “sales”: 12 chunks removed, 2 stored versions erased, excerpts scrubbed from 1 history entry.',
    );
    expect(screen.queryByRole('alertdialog')).toBeNull();
    expect(await screen.findByRole('button', { name: 'sales (1 document)' })).toBeTruthy();
    expect(fetchMock.mock.calls.slice(4).map(([u]) => u)).toEqual([
      '/api/collections',
      '/api/collections/sales/documents',
    ]);
    expect(screen.getByRole('cell', { name: 'orders.pdf' })).toBeTruthy();
  });

  it("shows the server's reason when the document is unknown (404) and refreshes the list", async () => {
    const fetchMock = await openSales(
      fakeResponse(404, { detail: `Document ${SCHEMA.id} not found` }, 'Not Found'),
      collections({ name: 'sales', documents: 1, updated_at: null }),
      documents('sales', ORDERS),
    );
    fireEvent.click(screen.getByRole('button', { name: 'Delete schema.pdf' }));
    fireEvent.click(screen.getByRole('button', { name: 'Delete permanently' }));

    await screen.findByText(`Deleting schema.pdf failed (HTTP 404): Document ${SCHEMA.id} not found`);
    expect(screen.getByRole('status').querySelector('.error')).toBeTruthy();
    await waitFor(() => expect(screen.queryByRole('cell', { name: 'schema.pdf' })).toBeNull());
    expect(fetchMock).toHaveBeenCalledTimes(6);
    expect(await screen.findByRole('button', { name: 'sales (1 document)' })).toBeTruthy();
    expect(screen.getByRole('cell', { name: 'orders.pdf' })).toBeTruthy();
    // The refresh does not hide the error.
    expect(screen.getByRole('status').textContent).toMatch(/not found/);
  });
});
