import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import App from '../App.jsx';
import TokensPage from './TokensPage.jsx';
import { EDITOR_ME, callsTo, fakeResponse, mockClipboard, mockFetch, mockRoutes } from '../test/helpers.js';

const SECRET = `qgpt_${'A'.repeat(43)}`;
const OLD = {
  id: 't-old',
  name: 'nightly-report',
  prefix: 'qgpt_oldoldo',
  created_at: '2026-11-01T10:00:00Z',
  expires_at: '2099-01-30T10:00:00Z',
  revoked_at: null,
  last_used_at: '2026-12-01T08:00:00Z',
};
const GONE = { ...OLD, id: 't-gone', name: 'laptop', prefix: 'qgpt_gonegon', revoked_at: '2026-11-20T10:00:00Z', last_used_at: null };
const NEW = { id: 't-new', name: 'ci', prefix: SECRET.slice(0, 12), created_at: '2026-12-04T10:00:00Z', expires_at: '2027-01-03T10:00:00Z', revoked_at: null, last_used_at: null };

describe('TokensPage', () => {
  it('lists own tokens with prefix, name, dates, last use and revocation', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { tokens: [OLD, GONE] }));
    render(<TokensPage />);
    const table = await screen.findByRole('table', { name: 'Your tokens' });
    expect(within(table).getAllByRole('columnheader').map((h) => h.textContent)).toEqual([
      'Prefix', 'Name', 'Created', 'Expires', 'Last used', 'Status', 'Actions',
    ]);
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows[0].textContent).toContain('qgpt_oldoldo…');
    expect(rows[0].textContent).toContain('nightly-report');
    expect(rows[0].textContent).toContain('Active');
    expect(rows[1].textContent).toContain('never');
    expect(rows[1].textContent).toMatch(/Revoked/);
    // A revoked token cannot be revoked again.
    expect(screen.getAllByRole('button', { name: /^Revoke/ })).toHaveLength(1);
    expect(fetchMock.mock.calls[0][0]).toBe('/api/tokens');
    expect(screen.queryByLabelText("Show every user's tokens")).toBeNull();
  });

  it('validates the expiry (1-365 days, default 90) before calling the server', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { tokens: [] }));
    render(<TokensPage />);
    await screen.findByTestId('no-tokens');
    expect(screen.getByLabelText('Expires in (days, 1-365)').value).toBe('90');
    fireEvent.change(screen.getByLabelText('Token name'), { target: { value: 'ci' } });
    fireEvent.change(screen.getByLabelText('Expires in (days, 1-365)'), { target: { value: '366' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create token' }));
    expect(screen.getByRole('status').textContent).toMatch(/1 to 365/);
    expect(fetchMock).toHaveBeenCalledTimes(1);
  });

  it('shows a new token once, with a copy button, and not after leaving the page', async () => {
    const writeText = mockClipboard(vi.fn().mockResolvedValue(undefined));
    let listed = [OLD];
    const fetchMock = mockRoutes({
      'GET /api/auth/me': EDITOR_ME,
      'GET /api/tokens': () => ({ tokens: listed }),
      'POST /api/tokens': () => {
        listed = [NEW, OLD];
        return fakeResponse(201, { id: NEW.id, name: 'ci', prefix: NEW.prefix, expires_at: NEW.expires_at, token: SECRET });
      },
    });
    window.location.hash = '#/tokens';
    render(<App />);
    await screen.findByRole('cell', { name: 'nightly-report' });

    fireEvent.change(screen.getByLabelText('Token name'), { target: { value: ' ci ' } });
    fireEvent.change(screen.getByLabelText('Expires in (days, 1-365)'), { target: { value: '30' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create token' }));

    const shown = await screen.findByTestId('new-token');
    expect(within(shown).getByTestId('token-value').textContent).toBe(SECRET);
    expect(shown.textContent).toMatch(/you will not see it again/);
    const [, , init] = callsTo(fetchMock, 'POST', '/api/tokens')[0];
    expect(JSON.parse(init.body)).toEqual({ name: 'ci', expires_in_days: 30 });
    expect(init.headers['X-CSRF-Token']).toBe('csrf-editor');

    fireEvent.click(within(shown).getByRole('button', { name: 'Copy token' }));
    await screen.findByText('Copied');
    expect(writeText).toHaveBeenCalledWith(SECRET);
    // The list shows the new token by its prefix only.
    await screen.findByRole('cell', { name: 'ci' });
    expect(screen.getAllByText(SECRET)).toHaveLength(1);

    fireEvent.click(screen.getByRole('link', { name: 'History' }));
    fireEvent.click(screen.getByRole('link', { name: 'Tokens' }));
    await screen.findByRole('cell', { name: 'ci' });
    expect(screen.queryByTestId('new-token')).toBeNull();
    expect(screen.queryByText(SECRET)).toBeNull();
    expect(document.body.textContent).not.toContain(SECRET);
  });

  it('revokes a token only after confirmation', async () => {
    const fetchMock = mockFetch(
      fakeResponse(200, { tokens: [OLD] }),
      fakeResponse(204, null, 'No Content'),
      fakeResponse(200, { tokens: [{ ...OLD, revoked_at: '2026-12-04T12:00:00Z' }] }),
    );
    render(<TokensPage />);
    fireEvent.click(await screen.findByRole('button', { name: 'Revoke nightly-report' }));
    const dialog = screen.getByRole('alertdialog');
    expect(dialog.textContent).toMatch(/Revoke token “nightly-report” \(qgpt_oldoldo…\)\?/);
    fireEvent.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(screen.queryByRole('alertdialog')).toBeNull();
    expect(fetchMock).toHaveBeenCalledTimes(1);

    fireEvent.click(screen.getByRole('button', { name: 'Revoke nightly-report' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Revoke' }));
    await waitFor(() => expect(screen.getByRole('status').textContent).toBe('Revoked token “nightly-report” (qgpt_oldoldo…).'));
    expect(fetchMock.mock.calls[1][0]).toBe('/api/tokens/t-old');
    expect(fetchMock.mock.calls[1][1].method).toBe('DELETE');
    await waitFor(() => expect(screen.queryByRole('button', { name: /^Revoke/ })).toBeNull());
  });

  it("lets an admin list everyone's tokens", async () => {
    const fetchMock = mockFetch(
      fakeResponse(200, { tokens: [OLD] }),
      fakeResponse(200, { tokens: [{ ...OLD, username: 'erin' }] }),
    );
    render(<TokensPage isAdmin />);
    await screen.findByRole('cell', { name: 'nightly-report' });
    fireEvent.click(screen.getByLabelText("Show every user's tokens"));
    await screen.findByRole('cell', { name: 'erin' });
    expect(fetchMock.mock.calls[1][0]).toBe('/api/tokens?all=true');
  });
});
