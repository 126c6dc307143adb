import { useCallback, useEffect, useId, useRef, useState } from 'react';
import {
  createCollection,
  createUser,
  listAudit,
  listCollections,
  listUsers,
  removeGrant,
  setGrant,
  updateUser,
} from '../api.js';
import { describeError, formatBytes, formatDateTime } from '../components/format.js';

export const ROLES = ['viewer', 'editor', 'admin'];
export const AUDIT_PAGE_SIZE = 50;
const MIN_PASSWORD = 12;

function grantsText(user) {
  if (user.role === 'admin') return 'all (admin)';
  const grants = Array.isArray(user.grants) ? user.grants : [];
  return grants.length ? grants.map((g) => `${g.collection} (${g.permission})`).join(', ') : 'none';
}

function passwordProblem(password) {
  if (password.length < MIN_PASSWORD) return `The password needs at least ${MIN_PASSWORD} characters.`;
  if (password.length > 1024) return 'The password may have at most 1024 characters.';
  return null;
}

// Audit events: the backend's field names, with a fallback or two.
const auditTime = (e) => e.at ?? e.time ?? e.created_at;
const auditActor = (e) => e.actor_username ?? e.actor ?? e.username;
const auditClient = (e) => e.client_ip ?? e.client_address ?? e.client;
function auditDetails(e) {
  const d = e.details;
  if (d == null || (typeof d === 'object' && Object.keys(d).length === 0)) return '';
  return typeof d === 'string' ? d : JSON.stringify(d);
}

/** Admin only: users, their grants, collections, the audit log. Each action reports in one status line. */
export default function AdminPage({ currentUser = null }) {
  const [users, setUsers] = useState({ phase: 'loading', items: [] });
  const [collections, setCollections] = useState({ phase: 'loading', items: [] });
  const [audit, setAudit] = useState({ phase: 'loading', items: [], next: null });
  const [message, setMessage] = useState(null);
  const [busy, setBusy] = useState(false);
  const [usersKey, setUsersKey] = useState(0);
  const [collectionsKey, setCollectionsKey] = useState(0);
  const auditController = useRef(null);

  // New user.
  const [newName, setNewName] = useState('');
  const [newPassword, setNewPassword] = useState('');
  const [newRole, setNewRole] = useState('viewer');
  // Password reset (one user at a time).
  const [resetFor, setResetFor] = useState(null);
  const [resetPassword, setResetPassword] = useState('');
  // Grants.
  const [grantUser, setGrantUser] = useState('');
  const [grantCollection, setGrantCollection] = useState('');
  const [grantPermission, setGrantPermission] = useState('read');
  // New collection.
  const [newCollection, setNewCollection] = useState('');

  const ids = {
    newName: useId(),
    newPassword: useId(),
    newRole: useId(),
    reset: useId(),
    grantUser: useId(),
    grantCollection: useId(),
    grantPermission: useId(),
    newCollection: useId(),
  };

  useEffect(() => {
    const controller = new AbortController();
    setUsers((u) => ({ ...u, phase: 'loading' }));
    listUsers({ signal: controller.signal })
      .then((data) => setUsers({ phase: 'ready', items: Array.isArray(data.users) ? data.users : [] }))
      .catch((err) => {
        if (err?.name === 'AbortError') return;
        setUsers({ phase: 'error', items: [], error: describeError('Loading users', err) });
      });
    return () => controller.abort();
  }, [usersKey]);

  useEffect(() => {
    const controller = new AbortController();
    listCollections({ signal: controller.signal })
      .then((data) => setCollections({ phase: 'ready', items: Array.isArray(data.collections) ? data.collections : [] }))
      .catch((err) => {
        if (err?.name === 'AbortError') return;
        setCollections({ phase: 'error', items: [], error: describeError('Loading collections', err) });
      });
    return () => controller.abort();
  }, [collectionsKey]);

  const loadAudit = useCallback(async (before = null) => {
    auditController.current?.abort();
    const own = new AbortController();
    auditController.current = own;
    setAudit((a) => ({ ...a, phase: 'loading' }));
    try {
      const data = await listAudit({ limit: AUDIT_PAGE_SIZE, before, signal: own.signal });
      const page = Array.isArray(data.events) ? data.events : [];
      setAudit((a) => ({
        phase: 'ready',
        items: before == null ? page : [...a.items, ...page],
        next: data.next_before ?? null,
      }));
    } catch (err) {
      if (err?.name === 'AbortError') return;
      setAudit((a) => ({ ...a, phase: 'error', error: describeError('Loading the audit log', err) }));
    }
  }, []);

  useEffect(() => {
    loadAudit();
    return () => auditController.current?.abort();
  }, [loadAudit]);

  /** Run one change: report success or the server's reason, then refresh what it touched. */
  async function run(what, action, success, { reloadUsers = true, reloadCollections = false } = {}) {
    if (busy) return false;
    setBusy(true);
    setMessage({ kind: 'info', text: `${what}…` });
    try {
      await action();
      setMessage({ kind: 'ok', text: success });
      return true;
    } catch (err) {
      setMessage({ kind: 'error', text: describeError(what, err) });
      return false;
    } finally {
      setBusy(false);
      if (reloadUsers) setUsersKey((k) => k + 1);
      if (reloadCollections) setCollectionsKey((k) => k + 1);
      loadAudit();
    }
  }

  async function onCreateUser(event) {
    event.preventDefault();
    const username = newName.trim();
    if (!username) return setMessage({ kind: 'error', text: 'Give the new user a name.' });
    const problem = passwordProblem(newPassword);
    if (problem) return setMessage({ kind: 'error', text: problem });
    const ok = await run(
      `Creating user ${username}`,
      () => createUser({ username, password: newPassword, role: newRole }),
      `Created user ${username} (${newRole}).`,
    );
    if (ok) {
      setNewName('');
      setNewPassword('');
      setNewRole('viewer');
    }
    return undefined;
  }

  async function onResetPassword(event) {
    event.preventDefault();
    const problem = passwordProblem(resetPassword);
    if (problem) return setMessage({ kind: 'error', text: problem });
    const username = resetFor;
    const ok = await run(
      `Resetting the password of ${username}`,
      () => updateUser(username, { password: resetPassword }),
      `Set a new password for ${username}.`,
    );
    if (ok) {
      setResetFor(null);
      setResetPassword('');
    }
    return undefined;
  }

  const selectedUser = users.items.find((u) => u.username === grantUser) ?? null;
  const grantRoleIsViewer = selectedUser?.role === 'viewer';
  const effectivePermission = grantRoleIsViewer ? 'read' : grantPermission;
  const collectionNames = collections.items.map((c) => c.name);
  const effectiveCollection = collectionNames.includes(grantCollection) ? grantCollection : (collectionNames[0] ?? '');

  async function onSetGrant(event) {
    event.preventDefault();
    if (!selectedUser) return setMessage({ kind: 'error', text: 'Choose a user first.' });
    if (!effectiveCollection) return setMessage({ kind: 'error', text: 'Choose a collection first.' });
    const { username } = selectedUser;
    await run(
      `Granting ${effectivePermission} on ${effectiveCollection} to ${username}`,
      () => setGrant(username, effectiveCollection, effectivePermission),
      `${username} now holds ${effectivePermission} on “${effectiveCollection}”.`,
    );
    return undefined;
  }

  async function onCreateCollection(event) {
    event.preventDefault();
    const name = newCollection.trim();
    if (!name) return setMessage({ kind: 'error', text: 'Give the collection a name.' });
    const ok = await run(`Creating collection ${name}`, () => createCollection(name), `Created collection “${name}”.`, {
      reloadUsers: false,
      reloadCollections: true,
    });
    if (ok) setNewCollection('');
    return undefined;
  }

  return (
    <section className="page admin">
      <h2>Admin</h2>

      <div role="status" aria-live="polite" className={`status${message?.kind === 'ok' ? ' status-success' : ''}`}>
        {message && <span className={message.kind === 'error' ? 'error' : undefined}>{message.text}</span>}
      </div>

      <h3 id="users-heading">Users</h3>
      {users.phase === 'error' && (
        <p className="error" role="alert">
          {users.error}
        </p>
      )}
      {users.items.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-labelledby="users-heading" data-testid="users">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Status</th>
                <th scope="col">Last login</th>
                <th scope="col">Storage</th>
                <th scope="col">Grants</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.items.map((u) => {
                const self = u.username === currentUser;
                return (
                  <tr key={u.username}>
                    <td>{u.username}</td>
                    <td>
                      <select
                        aria-label={`Role of ${u.username}`}
                        value={u.role}
                        disabled={busy || self}
                        title={self ? 'You cannot change your own role here.' : undefined}
                        onChange={(e) => {
                          const role = e.target.value;
                          run(`Changing the role of ${u.username}`, () => updateUser(u.username, { role }), `${u.username} is now ${role}.`);
                        }}
                      >
                        {ROLES.map((r) => (
                          <option key={r} value={r}>
                            {r}
                          </option>
                        ))}
                      </select>
                    </td>
                    <td>{u.disabled ? 'disabled' : 'active'}</td>
                    <td>{u.last_login_at ? formatDateTime(u.last_login_at) : 'never'}</td>
                    <td>
                      {formatBytes(u.storage_used_bytes)}
                      {u.storage_quota_bytes != null && ` of ${formatBytes(u.storage_quota_bytes)}`}
                    </td>
                    <td>{grantsText(u)}</td>
                    <td className="actions">
                      {!self && (
                        <button
                          type="button"
                          className={u.disabled ? 'secondary small' : 'danger small'}
                          disabled={busy}
                          aria-label={`${u.disabled ? 'Enable' : 'Disable'} ${u.username}`}
                          onClick={() =>
                            run(
                              `${u.disabled ? 'Enabling' : 'Disabling'} ${u.username}`,
                              () => updateUser(u.username, { disabled: !u.disabled }),
                              u.disabled
                                ? `Enabled ${u.username}.`
                                : `Disabled ${u.username}: its sessions and tokens stopped working.`,
                            )
                          }
                        >
                          {u.disabled ? 'Enable' : 'Disable'}
                        </button>
                      )}
                      <button
                        type="button"
                        className="secondary small"
                        disabled={busy}
                        aria-label={`Reset password of ${u.username}`}
                        onClick={() => {
                          setResetFor(u.username);
                          setResetPassword('');
                        }}
                      >
                        Reset password
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}

      {resetFor && (
        <form className="inline-form panel" onSubmit={onResetPassword} noValidate>
          <div className="field">
            <label htmlFor={ids.reset}>New password for {resetFor}</label>
            <input
              id={ids.reset}
              type="password"
              value={resetPassword}
              onChange={(e) => setResetPassword(e.target.value)}
              autoComplete="new-password"
              disabled={busy}
            />
          </div>
          <button type="submit" disabled={busy}>
            Set password
          </button>
          <button type="button" className="secondary" onClick={() => setResetFor(null)} disabled={busy}>
            Cancel
          </button>
        </form>
      )}

      <h4>Create a user</h4>
      <form className="inline-form" onSubmit={onCreateUser} noValidate>
        <div className="field">
          <label htmlFor={ids.newName}>New username</label>
          <input
            id={ids.newName}
            type="text"
            value={newName}
            onChange={(e) => setNewName(e.target.value)}
            autoComplete="off"
            spellCheck={false}
            disabled={busy}
          />
        </div>
        <div className="field">
          <label htmlFor={ids.newPassword}>Initial password (at least {MIN_PASSWORD} characters)</label>
          <input
            id={ids.newPassword}
            type="password"
            value={newPassword}
            onChange={(e) => setNewPassword(e.target.value)}
            autoComplete="new-password"
            disabled={busy}
          />
        </div>
        <div className="field field-narrow">
          <label htmlFor={ids.newRole}>New user's role</label>
          <select id={ids.newRole} value={newRole} onChange={(e) => setNewRole(e.target.value)} disabled={busy}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" disabled={busy}>
          Create user
        </button>
      </form>

      <h3 id="grants-heading">Grants</h3>
      <p className="hint">Admins read and write every collection without grants. Viewers can only be given read.</p>
      <form className="inline-form" onSubmit={onSetGrant} noValidate>
        <div className="field">
          <label htmlFor={ids.grantUser}>Grant to user</label>
          <select id={ids.grantUser} value={grantUser} onChange={(e) => setGrantUser(e.target.value)} disabled={busy}>
            <option value="">(choose)</option>
            {users.items
              .filter((u) => u.role !== 'admin')
              .map((u) => (
                <option key={u.username} value={u.username}>
                  {u.username} ({u.role})
                </option>
              ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={ids.grantCollection}>Grant on collection</label>
          <select
            id={ids.grantCollection}
            value={effectiveCollection}
            onChange={(e) => setGrantCollection(e.target.value)}
            disabled={busy || collectionNames.length === 0}
          >
            {collectionNames.length === 0 && <option value="">(no collections)</option>}
            {collectionNames.map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </div>
        <div className="field field-narrow">
          <label htmlFor={ids.grantPermission}>Permission</label>
          <select
            id={ids.grantPermission}
            value={effectivePermission}
            onChange={(e) => setGrantPermission(e.target.value)}
            disabled={busy}
          >
            <option value="read">read</option>
            {!grantRoleIsViewer && <option value="write">write</option>}
          </select>
        </div>
        <button type="submit" disabled={busy || !selectedUser}>
          Set grant
        </button>
      </form>
      {collections.phase === 'error' && (
        <p className="error" role="alert">
          {collections.error}
        </p>
      )}
      {selectedUser && (
        <div data-testid="user-grants">
          {(selectedUser.grants ?? []).length === 0 ? (
            <p className="hint">{selectedUser.username} holds no grants.</p>
          ) : (
            <ul className="grant-list" aria-label={`Grants of ${selectedUser.username}`}>
              {selectedUser.grants.map((g) => (
                <li key={g.collection}>
                  <span>
                    {g.collection}: {g.permission}
                  </span>{' '}
                  <button
                    type="button"
                    className="secondary small"
                    disabled={busy}
                    aria-label={`Remove ${selectedUser.username}'s grant on ${g.collection}`}
                    onClick={() =>
                      run(
                        `Removing ${selectedUser.username}'s grant on ${g.collection}`,
                        () => removeGrant(selectedUser.username, g.collection),
                        `Removed ${selectedUser.username}'s grant on “${g.collection}”.`,
                      )
                    }
                  >
                    Remove
                  </button>
                </li>
              ))}
            </ul>
          )}
        </div>
      )}

      <h3>Collections</h3>
      <p className="hint">
        {collectionNames.length ? `Existing: ${collectionNames.join(', ')}.` : 'No collections yet.'}
      </p>
      <form className="inline-form" onSubmit={onCreateCollection} noValidate>
        <div className="field">
          <label htmlFor={ids.newCollection}>New collection name</label>
          <input
            id={ids.newCollection}
            type="text"
            value={newCollection}
            onChange={(e) => setNewCollection(e.target.value)}
            autoComplete="off"
            spellCheck={false}
            disabled={busy}
          />
        </div>
        <button type="submit" disabled={busy}>
          Create collection
        </button>
      </form>

      <h3 id="audit-heading">Audit log</h3>
      {audit.phase === 'error' && (
        <p className="error" role="alert">
          {audit.error}
        </p>
      )}
      {audit.phase === 'ready' && audit.items.length === 0 && <p className="hint">No events yet.</p>}
      {audit.items.length > 0 && (
        <table className="data" aria-labelledby="audit-heading" data-testid="audit" aria-busy={audit.phase === 'loading'}>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Collection</th>
              <th scope="col">Outcome</th>
              <th scope="col">Client</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {audit.items.map((e, i) => (
              <tr key={e.id ?? i}>
                <td>{formatDateTime(auditTime(e))}</td>
                <td>
                  {auditActor(e) ?? ''}
                  {e.auth_method ? ` (${e.auth_method})` : ''}
                </td>
                <td>{e.action}</td>
                <td>{e.target ?? ''}</td>
                <td>{e.collection ?? ''}</td>
                <td>{e.outcome}</td>
                <td>{auditClient(e) ?? ''}</td>
                <td className="details">{auditDetails(e)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {audit.next != null && audit.items.length > 0 && (
        <button type="button" onClick={() => loadAudit(audit.next)} disabled={audit.phase === 'loading'}>
          {audit.phase === 'loading' ? 'Loading…' : 'Load older events'}
        </button>
      )}
    </section>
  );
}
