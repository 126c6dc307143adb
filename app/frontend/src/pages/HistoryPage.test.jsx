import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import HistoryPage, { PAGE_SIZE } from './HistoryPage.jsx';
import { deferred, fakeResponse, mockClipboard, mockFetch } from '../test/helpers.js';

const SQL = 'SELECT name\nFROM customers\nORDER BY created_at DESC\nLIMIT 10;';

function entry(id, overrides = {}) {
  return {
    id,
    collection: 'sales',
    question: `Question ${id}?`,
    answer: `SELECT ${id};`,
    sources: [],
    latency_ms: 100 + id,
    created_at: `2026-01-0${(id % 9) + 1}T10:00:00Z`,
    ...overrides,
  };
}

const page = (entries, nextBefore = null) => fakeResponse(200, { entries, next_before: nextBefore });

function historyUrl(fetchMock, call) {
  const url = new URL(fetchMock.mock.calls[call][0], 'http://x');
  return { path: url.pathname, params: Object.fromEntries(url.searchParams) };
}

describe('HistoryPage', () => {
  it('shows a loading state, then the entries newest first with collection, latency and time', async () => {
    const pending = deferred();
    const fetchMock = mockFetch();
    fetchMock.mockReturnValueOnce(pending.promise);
    render(<HistoryPage />);
    expect(screen.getByRole('status').textContent).toBe('Loading history…');

    pending.resolve(page([entry(12, { collection: 'hr', latency_ms: 1834 }), entry(7)]));
    const items = within(await screen.findByTestId('history')).getAllByTestId('history-entry');
    expect(items.map((li) => li.querySelector('.history-question').textContent)).toEqual([
      'Question 12?',
      'Question 7?',
    ]);
    expect(items[0].textContent).toContain('hr');
    expect(items[0].textContent).toContain('1834 ms');
    const time = items[0].querySelector('time');
    expect(time.getAttribute('datetime')).toBe(entry(12).created_at);
    expect(time.textContent).toBe(new Date(entry(12).created_at).toLocaleString());
    expect(screen.getByRole('status').textContent).toBe('Showing 2 questions.');
    expect(historyUrl(fetchMock, 0)).toEqual({ path: '/api/history', params: { limit: String(PAGE_SIZE) } });
    // No next page: no "Load more".
    expect(screen.queryByRole('button', { name: 'Load more' })).toBeNull();
  });

  it('expands an answer to show the SQL in a <pre> and its sources, and collapses it again', async () => {
    mockFetch(
      page([
        entry(3, {
          answer: SQL,
          sources: [
            { document_id: 'd1', filename: 'schema.pdf', page: 4, chunk: 2, score: 0.87654, text: 'Table customers' },
          ],
        }),
      ]),
    );
    render(<HistoryPage />);
    const toggle = await screen.findByRole('button', { name: 'Show answer (1 source)' });
    expect(toggle.getAttribute('aria-expanded')).toBe('false');
    expect(screen.queryByTestId('history-sql')).toBeNull();

    fireEvent.click(toggle);
    expect(toggle.getAttribute('aria-expanded')).toBe('true');
    const pre = screen.getByTestId('history-sql');
    expect(pre.tagName).toBe('PRE');
    expect(pre.textContent).toBe(SQL);
    expect(document.getElementById(toggle.getAttribute('aria-controls')).contains(pre)).toBe(true);
    const source = within(screen.getByTestId('history-sources')).getByRole('listitem');
    expect(source.textContent).toContain('schema.pdf');
    expect(source.textContent).toContain('page 4');
    expect(source.textContent).toContain('score 0.877');
    expect(source.textContent).toContain('Table customers');

    fireEvent.click(screen.getByRole('button', { name: 'Hide answer' }));
    expect(screen.queryByTestId('history-sql')).toBeNull();
  });

  it('loads older entries with "Load more" using next_before, until there are none', async () => {
    const more = deferred();
    const fetchMock = mockFetch(page([entry(9), entry(8)], 8));
    fetchMock.mockReturnValueOnce(more.promise);
    render(<HistoryPage />);

    fireEvent.click(await screen.findByRole('button', { name: 'Load more' }));
    expect(screen.getByRole('status').textContent).toBe('Loading more…');
    expect(screen.getByRole('button', { name: 'Loading…' }).disabled).toBe(true);
    expect(historyUrl(fetchMock, 1).params).toEqual({ limit: String(PAGE_SIZE), before: '8' });

    // An entry repeated across pages (a concurrent insert shifted the page) is shown once.
    more.resolve(page([entry(8), entry(5), entry(2)], null));
    await waitFor(() => expect(screen.getAllByTestId('history-entry')).toHaveLength(4));
    expect(screen.getAllByTestId('history-entry').map((li) => li.querySelector('.history-question').textContent)).toEqual(
      ['Question 9?', 'Question 8?', 'Question 5?', 'Question 2?'],
    );
    expect(screen.queryByRole('button', { name: 'Load more' })).toBeNull();
    expect(screen.getByRole('status').textContent).toBe('Showing 4 questions.');
  });

  it('keeps what it has and shows the reason when "Load more" fails', async () => {
    mockFetch(page([entry(9)], 9), fakeResponse(500, { detail: 'database unavailable' }, 'Internal Server Error'));
    render(<HistoryPage />);
    fireEvent.click(await screen.findByRole('button', { name: 'Load more' }));
    await screen.findByText('Loading more history failed (HTTP 500): database unavailable');
    expect(screen.getAllByTestId('history-entry')).toHaveLength(1);
    expect(screen.getByRole('button', { name: 'Load more' }).disabled).toBe(false);
  });

  it("shows the server's reason when the history cannot be loaded", async () => {
    mockFetch(fakeResponse(503, { detail: 'database unavailable' }, 'Service Unavailable'));
    render(<HistoryPage />);
    expect((await screen.findByText(/database unavailable/)).textContent).toBe(
      'Loading history failed (HTTP 503): database unavailable',
    );
    expect(screen.queryByTestId('history')).toBeNull();
  });

  it('says so when there is no history, and filters by collection', async () => {
    const fetchMock = mockFetch(page([]), page([entry(4, { collection: 'hr' })], 4), page([entry(1, { collection: 'hr' })]));
    render(<HistoryPage />);
    expect((await screen.findByTestId('no-history')).textContent).toBe('No questions asked yet.');

    fireEvent.change(screen.getByLabelText('Only collection (blank for all)'), { target: { value: ' hr ' } });
    fireEvent.click(screen.getByRole('button', { name: 'Show' }));
    await screen.findByText('Question 4?');
    expect(historyUrl(fetchMock, 1).params).toEqual({ limit: String(PAGE_SIZE), collection: 'hr' });

    // "Load more" keeps the filter.
    fireEvent.click(screen.getByRole('button', { name: 'Load more' }));
    await screen.findByText('Question 1?');
    expect(historyUrl(fetchMock, 2).params).toEqual({ limit: String(PAGE_SIZE), before: '4', collection: 'hr' });
  });

  it('copies an answer from the history, and explains when the clipboard is unavailable', async () => {
    const writeText = mockClipboard(vi.fn().mockResolvedValue(undefined));
    mockFetch(page([entry(3, { answer: SQL })]));
    render(<HistoryPage />);
    fireEvent.click(await screen.findByRole('button', { name: /Show answer/ }));
    fireEvent.click(screen.getByRole('button', { name: 'Copy SQL' }));
    await screen.findByText('Copied');
    expect(writeText).toHaveBeenCalledWith(SQL);

    mockClipboard(null);
    fireEvent.click(screen.getByRole('button', { name: 'Copy SQL' }));
    await screen.findByText(/Copying is not available/);
    expect(screen.queryByText('Copied')).toBeNull();
  });
});
