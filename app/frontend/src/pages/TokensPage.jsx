import { useEffect, useId, useRef, useState } from 'react';
import { createToken, listTokens, revokeToken } from '../api.js';
import ConfirmBox from '../components/ConfirmBox.jsx';
import CopyButton from '../components/CopyButton.jsx';
import { describeError, formatDateTime } from '../components/format.js';

export const DEFAULT_EXPIRY_DAYS = 90;

function tokenState(t, now = Date.now()) {
  if (t.revoked_at) return `Revoked ${formatDateTime(t.revoked_at)}`;
  const expires = Date.parse(t.expires_at ?? '');
  if (!Number.isNaN(expires) && expires <= now) return 'Expired';
  return 'Active';
}

/**
 * API tokens for scripts: create one (shown once, here, until the page is left or dismissed),
 * list them, revoke one after confirmation. An admin may list everyone's (`?all=true`).
 */
export default function TokensPage({ isAdmin = false }) {
  const [name, setName] = useState('');
  const [days, setDays] = useState(String(DEFAULT_EXPIRY_DAYS));
  const [all, setAll] = useState(false);
  const [tokens, setTokens] = useState({ phase: 'loading', items: [] });
  const [created, setCreated] = useState(null);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(null);
  const [message, setMessage] = useState(null);
  const [reloadKey, setReloadKey] = useState(0);
  const cancelRef = useRef(null);
  const nameId = useId();
  const daysId = useId();
  const allId = useId();

  useEffect(() => {
    const controller = new AbortController();
    setTokens((t) => ({ ...t, phase: 'loading' }));
    listTokens({ all: isAdmin && all, signal: controller.signal })
      .then((data) => setTokens({ phase: 'ready', items: Array.isArray(data.tokens) ? data.tokens : [] }))
      .catch((err) => {
        if (err?.name === 'AbortError') return;
        setTokens({ phase: 'error', items: [], error: describeError('Loading tokens', err) });
      });
    return () => controller.abort();
  }, [reloadKey, all, isAdmin]);

  useEffect(() => {
    if (confirming) cancelRef.current?.focus();
  }, [confirming]);

  async function onCreate(event) {
    event.preventDefault();
    if (busy) return;
    const label = name.trim();
    const n = Number(days);
    if (!label) {
      setMessage({ kind: 'error', text: 'Give the token a name (what will use it).' });
      return;
    }
    if (!Number.isInteger(n) || n < 1 || n > 365) {
      setMessage({ kind: 'error', text: 'The expiry must be a whole number of days from 1 to 365.' });
      return;
    }
    setBusy(true);
    setCreated(null);
    setMessage({ kind: 'info', text: 'Creating token…' });
    try {
      const data = await createToken({ name: label, expiresInDays: n });
      setCreated(data);
      setName('');
      setDays(String(DEFAULT_EXPIRY_DAYS));
      setMessage({ kind: 'ok', text: `Created token “${data.name ?? label}”. Copy it now: you will not see it again.` });
      setReloadKey((k) => k + 1);
    } catch (err) {
      setMessage({ kind: 'error', text: describeError('Creating the token', err) });
    } finally {
      setBusy(false);
    }
  }

  function cancelRevoke() {
    if (busy) return;
    setConfirming(null);
    setMessage({ kind: 'info', text: 'Nothing was revoked.' });
  }

  async function confirmRevoke() {
    if (!confirming || busy) return;
    const t = confirming;
    setBusy(true);
    try {
      await revokeToken(t.id);
      setMessage({ kind: 'ok', text: `Revoked token “${t.name}” (${t.prefix}…).` });
    } catch (err) {
      setMessage({ kind: 'error', text: describeError(`Revoking “${t.name}”`, err) });
    } finally {
      setBusy(false);
      setConfirming(null);
      setReloadKey((k) => k + 1);
    }
  }

  const showUser = isAdmin && all;

  return (
    <section className="page">
      <h2>API tokens</h2>
      <p className="hint">
        Scripts authenticate with <code>Authorization: Bearer &lt;token&gt;</code>. A token acts as you, with
        your current role and grants, until it expires or is revoked.
      </p>

      <form onSubmit={onCreate} noValidate className="inline-form">
        <div className="field">
          <label htmlFor={nameId}>Token name</label>
          <input
            id={nameId}
            type="text"
            value={name}
            onChange={(e) => setName(e.target.value)}
            placeholder="e.g. nightly-report"
            autoComplete="off"
            spellCheck={false}
            disabled={busy}
          />
        </div>
        <div className="field field-narrow">
          <label htmlFor={daysId}>Expires in (days, 1-365)</label>
          <input
            id={daysId}
            type="number"
            min={1}
            max={365}
            step={1}
            value={days}
            onChange={(e) => setDays(e.target.value)}
            disabled={busy}
          />
        </div>
        <button type="submit" disabled={busy}>
          Create token
        </button>
      </form>

      <div role="status" aria-live="polite" className={`status${message?.kind === 'ok' ? ' status-success' : ''}`}>
        {message && <span className={message.kind === 'error' ? 'error' : undefined}>{message.text}</span>}
      </div>

      {created?.token && (
        <div className="new-token" data-testid="new-token">
          <h3>Your new token “{created.name}”</h3>
          <p>
            <strong>This is the only time it is shown: you will not see it again.</strong> Copy it now and keep it
            somewhere safe. It expires {formatDateTime(created.expires_at)}.
          </p>
          <pre className="sql" data-testid="token-value">
            <code>{created.token}</code>
          </pre>
          <div className="confirm-actions">
            <CopyButton text={created.token} label="Copy token" />
            <button type="button" className="secondary" onClick={() => setCreated(null)}>
              Done, hide it
            </button>
          </div>
        </div>
      )}

      <h3 id="tokens-heading">{showUser ? 'All tokens' : 'Your tokens'}</h3>
      {isAdmin && (
        <div className="checkbox">
          <input id={allId} type="checkbox" checked={all} onChange={(e) => setAll(e.target.checked)} />
          <label htmlFor={allId}>Show every user's tokens</label>
        </div>
      )}

      {confirming && (
        <ConfirmBox
          title={`Revoke token “${confirming.name}” (${confirming.prefix}…)? Scripts using it stop working at once.`}
          confirmLabel="Revoke"
          busy={busy}
          onConfirm={confirmRevoke}
          onCancel={cancelRevoke}
          cancelRef={cancelRef}
        />
      )}

      {tokens.phase === 'error' && (
        <p className="error" role="alert">
          {tokens.error}
        </p>
      )}
      {tokens.phase === 'ready' && tokens.items.length === 0 && (
        <p className="hint" data-testid="no-tokens">
          No tokens yet.
        </p>
      )}
      {tokens.items.length > 0 && (
        <table className="data" aria-labelledby="tokens-heading" data-testid="tokens">
          <thead>
            <tr>
              {showUser && <th scope="col">User</th>}
              <th scope="col">Prefix</th>
              <th scope="col">Name</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">Status</th>
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {tokens.items.map((t) => (
              <tr key={t.id}>
                {showUser && <td>{t.username}</td>}
                <td>
                  <code>{t.prefix}…</code>
                </td>
                <td>{t.name}</td>
                <td>{formatDateTime(t.created_at)}</td>
                <td>{formatDateTime(t.expires_at)}</td>
                <td>{t.last_used_at ? formatDateTime(t.last_used_at) : 'never'}</td>
                <td>{tokenState(t)}</td>
                <td>
                  {!t.revoked_at && (
                    <button
                      type="button"
                      className="danger small"
                      aria-label={`Revoke ${t.name}`}
                      onClick={() => {
                        setMessage(null);
                        setConfirming(t);
                      }}
                      disabled={busy}
                    >
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
