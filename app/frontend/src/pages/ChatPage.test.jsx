import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen, within } from '@testing-library/react';
import ChatPage from './ChatPage.jsx';
import { deferred, fakeResponse, mockClipboard, mockFetch } from '../test/helpers.js';

const SQL = 'SELECT c.name, SUM(o.total) AS revenue\nFROM customers c\nJOIN orders o ON o.customer_id = c.id\nGROUP BY c.name;';

describe('ChatPage', () => {
  it('renders labelled controls with the default collection', () => {
    render(<ChatPage />);
    expect(screen.getByLabelText('Question').tagName).toBe('TEXTAREA');
    expect(screen.getByLabelText('Collection').value).toBe('querygpt');
    expect(screen.getByRole('button', { name: 'Ask' })).toBeTruthy();
    expect(screen.getByRole('status')).toBeTruthy();
  });

  it('asks a question and renders the SQL and the sources', async () => {
    const pending = deferred();
    const fetchMock = mockFetch();
    fetchMock.mockReturnValueOnce(pending.promise);
    render(<ChatPage />);

    fireEvent.change(screen.getByLabelText('Question'), { target: { value: '  Revenue per customer?  ' } });
    fireEvent.click(screen.getByRole('button', { name: 'Ask' }));

    expect(screen.getByRole('status').textContent).toMatch(/Generating SQL/);
    expect(screen.getByRole('button', { name: /Asking/ }).disabled).toBe(true);

    pending.resolve(
      fakeResponse(200, {
        result: SQL,
        sources: [
          { filename: 'schema.pdf', page: 3, chunk: 5, score: 0.91234, text: 'Table customers (id, name, email)' },
          { filename: 'orders.pdf', page: 1, chunk: 0, score: 0.5, text: 'x'.repeat(1000) },
        ],
      }),
    );

    const pre = await screen.findByTestId('sql-result');
    expect(pre.tagName).toBe('PRE');
    expect(pre.textContent).toBe(SQL);

    const sources = screen.getByTestId('sources');
    const items = within(sources).getAllByRole('listitem');
    expect(items).toHaveLength(2);
    expect(items[0].textContent).toContain('schema.pdf');
    expect(items[0].textContent).toContain('page 3');
    expect(items[0].textContent).toContain('score 0.912');
    expect(items[0].textContent).toContain('Table customers (id, name, email)');
    expect(items[1].textContent).toContain('orders.pdf');
    // Long chunk text is shown as a truncated excerpt.
    expect(items[1].querySelector('blockquote').textContent.length).toBeLessThanOrEqual(401);
    expect(screen.getByRole('status').textContent).toBe('Answer ready (2 sources).');

    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/query');
    expect(JSON.parse(init.body)).toEqual({ query: 'Revenue per customer?', collection_name: 'querygpt' });
  });

  it('uses the collection typed by the user', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { result: 'SELECT 1;', sources: [] }));
    render(<ChatPage />);
    fireEvent.change(screen.getByLabelText('Collection'), { target: { value: 'hr' } });
    fireEvent.change(screen.getByLabelText('Question'), { target: { value: 'q' } });
    fireEvent.click(screen.getByRole('button', { name: 'Ask' }));
    await screen.findByTestId('sql-result');
    expect(screen.getByTestId('sources').textContent).toMatch(/No sources/);
    expect(JSON.parse(fetchMock.mock.calls[0][1].body).collection_name).toBe('hr');
  });

  it("shows the server's reason when the query fails", async () => {
    mockFetch(fakeResponse(404, { detail: "Collection 'nope' not found" }, 'Not Found'));
    render(<ChatPage />);
    fireEvent.change(screen.getByLabelText('Question'), { target: { value: 'anything' } });
    fireEvent.click(screen.getByRole('button', { name: 'Ask' }));
    await screen.findByText(/Collection 'nope' not found/);
    expect(screen.getByRole('status').textContent).toBe("Query failed (HTTP 404): Collection 'nope' not found");
    expect(screen.queryByTestId('sql-result')).toBeNull();
  });

  it('does not call the API for an empty question', () => {
    const fetchMock = mockFetch();
    render(<ChatPage />);
    fireEvent.click(screen.getByRole('button', { name: 'Ask' }));
    expect(screen.getByRole('status').textContent).toMatch(/Type a question/);
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it('submits with Ctrl+Enter in the question box', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { result: 'SELECT 2;', sources: [] }));
    render(<ChatPage />);
    const question = screen.getByLabelText('Question');
    fireEvent.change(question, { target: { value: 'two?' } });
    fireEvent.keyDown(question, { key: 'Enter', ctrlKey: true });
    expect((await screen.findByTestId('sql-result')).textContent).toBe('SELECT 2;');
    expect(fetchMock).toHaveBeenCalledTimes(1);
  });

  describe('Copy SQL', () => {
    async function answer() {
      mockFetch(fakeResponse(200, { result: SQL, sources: [] }));
      render(<ChatPage />);
      fireEvent.change(screen.getByLabelText('Question'), { target: { value: 'q' } });
      fireEvent.click(screen.getByRole('button', { name: 'Ask' }));
      await screen.findByTestId('sql-result');
    }

    it('is offered only once there is an answer', () => {
      render(<ChatPage />);
      expect(screen.queryByRole('button', { name: 'Copy SQL' })).toBeNull();
    });

    it('copies the SQL to the clipboard and says "Copied"', async () => {
      const writeText = mockClipboard(vi.fn().mockResolvedValue(undefined));
      await answer();
      fireEvent.click(screen.getByRole('button', { name: 'Copy SQL' }));
      await screen.findByText('Copied');
      expect(writeText).toHaveBeenCalledWith(SQL);
      // The feedback is in a live region, so screen readers hear it; the page keeps one status.
      expect(screen.getByText('Copied').getAttribute('aria-live')).toBe('polite');
      expect(screen.getAllByRole('status')).toHaveLength(1);
    });

    it('explains when the clipboard refuses the write', async () => {
      mockClipboard(vi.fn().mockRejectedValue(new DOMException('Write permission denied.', 'NotAllowedError')));
      await answer();
      fireEvent.click(screen.getByRole('button', { name: 'Copy SQL' }));
      const msg = await screen.findByText(/Could not copy/);
      expect(msg.textContent).toMatch(/Write permission denied/);
      expect(msg.textContent).toMatch(/copy it by hand/);
      expect(screen.queryByText('Copied')).toBeNull();
    });

    it('degrades to a message when the clipboard API is unavailable', async () => {
      mockClipboard(null);
      await answer();
      fireEvent.click(screen.getByRole('button', { name: 'Copy SQL' }));
      expect((await screen.findByText(/Copying is not available/)).textContent).toMatch(/copy it by hand/);
      // The SQL stays selectable on the page.
      expect(screen.getByTestId('sql-result').textContent).toBe(SQL);
    });
  });
});
