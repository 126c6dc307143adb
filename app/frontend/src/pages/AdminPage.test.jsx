import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import App from '../App.jsx';
import { ADMIN_ME, callsTo, fakeResponse, mockRoutes } from '../test/helpers.js';

const ROOT = { username: 'root', role: 'admin', disabled: false, created_at: null, last_login_at: '2026-12-04T09:00:00Z', storage_quota_bytes: null, storage_used_bytes: 0, grants: [] };
const VIC = { ...ROOT, username: 'vic', role: 'viewer', last_login_at: null, storage_used_bytes: 2048, grants: [{ collection: 'querygpt', permission: 'read' }] };
const EVENT = (id, action) => ({ id, at: '2026-12-04T10:00:00Z', actor_username: 'root', auth_method: 'session', action, target: null, collection: null, client_ip: '10.0.0.5', outcome: 'success', details: {} });

function adminRoutes(extra = {}) {
  let users = [ROOT, VIC];
  const routes = {
    'GET /api/auth/me': ADMIN_ME,
    'GET /api/users': () => ({ users }),
    'GET /api/collections': { collections: [{ name: 'querygpt', documents: 1, updated_at: null }, { name: 'sales', documents: 0, updated_at: null }] },
    'GET /api/audit?limit=50': { events: [EVENT(9, 'login'), EVENT(8, 'upload')], next_before: 8 },
    'GET /api/audit?limit=50&before=8': { events: [EVENT(7, 'logout')], next_before: null },
    'POST /api/users': (url, init) => {
      const body = JSON.parse(init.body);
      const user = { ...ROOT, username: body.username, role: body.role, last_login_at: null };
      users = [...users, user];
      return fakeResponse(201, user);
    },
    'PUT /api/users/alice/grants/sales': (url, init) => {
      users = users.map((u) => (u.username === 'alice' ? { ...u, grants: [{ collection: 'sales', permission: JSON.parse(init.body).permission }] } : u));
      return { username: 'alice', collection: 'sales', permission: JSON.parse(init.body).permission };
    },
    ...extra,
  };
  return mockRoutes(routes);
}

async function openAdmin() {
  window.location.hash = '#/admin';
  render(<App />);
  return screen.findByRole('table', { name: 'Users' });
}

describe('AdminPage', () => {
  it('lists users, collections and the newest audit events, paging with next_before', async () => {
    const fetchMock = adminRoutes();
    const users = await openAdmin();
    const rows = within(users).getAllByRole('row').slice(1);
    expect(rows.map((r) => r.cells[0].textContent)).toEqual(['root', 'vic']);
    expect(rows[1].textContent).toContain('querygpt (read)');
    expect(rows[1].textContent).toContain('2.0 KiB');
    // Your own row: no disable, role fixed.
    expect(screen.queryByRole('button', { name: 'Disable root' })).toBeNull();
    expect(screen.getByLabelText('Role of root').disabled).toBe(true);

    const audit = await screen.findByRole('table', { name: 'Audit log' });
    await within(audit).findByText('upload');
    fireEvent.click(screen.getByRole('button', { name: 'Load older events' }));
    await within(audit).findByText('logout');
    expect(within(audit).getAllByRole('row')).toHaveLength(4);
    expect(screen.queryByRole('button', { name: 'Load older events' })).toBeNull();
    expect(callsTo(fetchMock, 'GET').map(([, u]) => u)).toContain('/api/audit?limit=50&before=8');
  });

  it('creates a user and gives it a grant, with the right requests', async () => {
    const fetchMock = adminRoutes();
    await openAdmin();
    fireEvent.change(screen.getByLabelText('New username'), { target: { value: 'alice' } });
    fireEvent.change(screen.getByLabelText('Initial password (at least 12 characters)'), { target: { value: 'correct horse battery' } });
    fireEvent.change(screen.getByLabelText("New user's role"), { target: { value: 'editor' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create user' }));
    await waitFor(() => expect(screen.getByRole('status').textContent).toBe('Created user alice (editor).'));
    const [, , create] = callsTo(fetchMock, 'POST', '/api/users')[0];
    expect(JSON.parse(create.body)).toEqual({ username: 'alice', password: 'correct horse battery', role: 'editor' });
    expect(create.headers['X-CSRF-Token']).toBe('csrf-admin');

    await within(screen.getByRole('table', { name: 'Users' })).findByText('alice');
    fireEvent.change(screen.getByLabelText('Grant to user'), { target: { value: 'alice' } });
    fireEvent.change(screen.getByLabelText('Grant on collection'), { target: { value: 'sales' } });
    fireEvent.change(screen.getByLabelText('Permission'), { target: { value: 'write' } });
    fireEvent.click(screen.getByRole('button', { name: 'Set grant' }));
    await waitFor(() => expect(screen.getByRole('status').textContent).toBe('alice now holds write on “sales”.'));
    const puts = callsTo(fetchMock, 'PUT');
    expect(puts).toHaveLength(1);
    expect(puts[0][1]).toBe('/api/users/alice/grants/sales');
    expect(JSON.parse(puts[0][2].body)).toEqual({ permission: 'write' });
    expect(puts[0][2].headers['X-CSRF-Token']).toBe('csrf-admin');
    expect(await within(screen.getByTestId('user-grants')).findByText('sales: write')).toBeTruthy();
  });

  it('offers a viewer only read, and shows the reason when the server refuses', async () => {
    const fetchMock = adminRoutes({
      'PUT /api/users/vic/grants/sales': fakeResponse(422, { detail: 'A viewer cannot hold write' }, 'Unprocessable Entity'),
    });
    await openAdmin();
    fireEvent.change(screen.getByLabelText('Grant to user'), { target: { value: 'vic' } });
    expect([...screen.getByLabelText('Permission').options].map((o) => o.value)).toEqual(['read']);
    fireEvent.change(screen.getByLabelText('Grant on collection'), { target: { value: 'sales' } });
    fireEvent.click(screen.getByRole('button', { name: 'Set grant' }));
    await waitFor(() =>
      expect(screen.getByRole('status').textContent).toBe(
        'Granting read on sales to vic failed (HTTP 422): A viewer cannot hold write',
      ),
    );
    expect(JSON.parse(callsTo(fetchMock, 'PUT')[0][2].body)).toEqual({ permission: 'read' });
  });

  it('changes a role, disables a user, resets a password, removes a grant and creates a collection', async () => {
    const fetchMock = adminRoutes({
      'PATCH /api/users/vic': (url, init) => ({ ...VIC, ...JSON.parse(init.body) }),
      'DELETE /api/users/vic/grants/querygpt': fakeResponse(204, null),
      'POST /api/collections': fakeResponse(201, { name: 'hr' }),
    });
    await openAdmin();
    const done = (text) => waitFor(() => expect(screen.getByRole('status').textContent).toBe(text));

    fireEvent.change(screen.getByLabelText('Role of vic'), { target: { value: 'editor' } });
    await done('vic is now editor.');
    fireEvent.click(screen.getByRole('button', { name: 'Disable vic' }));
    await done('Disabled vic: its sessions and tokens stopped working.');

    fireEvent.click(screen.getByRole('button', { name: 'Reset password of vic' }));
    fireEvent.change(screen.getByLabelText('New password for vic'), { target: { value: 'short' } });
    fireEvent.click(screen.getByRole('button', { name: 'Set password' }));
    await done('The password needs at least 12 characters.');
    fireEvent.change(screen.getByLabelText('New password for vic'), { target: { value: 'a much longer password' } });
    fireEvent.click(screen.getByRole('button', { name: 'Set password' }));
    await done('Set a new password for vic.');

    fireEvent.change(screen.getByLabelText('Grant to user'), { target: { value: 'vic' } });
    fireEvent.click(screen.getByRole('button', { name: "Remove vic's grant on querygpt" }));
    await done('Removed vic\'s grant on “querygpt”.');

    fireEvent.change(screen.getByLabelText('New collection name'), { target: { value: 'hr' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create collection' }));
    await done('Created collection “hr”.');

    const writes = fetchMock.mock.calls
      .filter(([, init]) => init.method !== 'GET')
      .map(([url, init]) => [init.method, url, init.body ? JSON.parse(init.body) : undefined]);
    expect(writes).toEqual([
      ['PATCH', '/api/users/vic', { role: 'editor' }],
      ['PATCH', '/api/users/vic', { disabled: true }],
      ['PATCH', '/api/users/vic', { password: 'a much longer password' }],
      ['DELETE', '/api/users/vic/grants/querygpt', undefined],
      ['POST', '/api/collections', { name: 'hr' }],
    ]);
  });

  it('is not offered to a non-admin', async () => {
    mockRoutes({ 'GET /api/auth/me': { username: 'erin', role: 'editor', grants: [], csrf_token: 'c' } });
    window.location.hash = '#/admin';
    render(<App />);
    await screen.findByRole('button', { name: 'Log out' });
    expect(screen.queryByRole('link', { name: 'Admin' })).toBeNull();
    expect(screen.queryByRole('heading', { name: 'Admin' })).toBeNull();
  });
});
