// All calls to the QueryGPT backend live here so tests can mock `fetch` in one place.
// The backend sits behind nginx at /api (same origin as this app).

export const API_BASE = (import.meta.env?.VITE_API_BASE ?? '/api').replace(/\/+$/, '');
export const DEFAULT_COLLECTION = 'querygpt';

/** Error carrying the HTTP status and the server's reason (its `detail`, when present). */
export class ApiError extends Error {
  constructor(message, status = 0, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

/** Turn a FastAPI-style `detail` (string, list of validation errors, or object) into text. */
export function detailToMessage(detail) {
  if (detail == null) return '';
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        if (typeof item === 'string') return item;
        if (item && typeof item === 'object') {
          const where = Array.isArray(item.loc) ? item.loc.filter((p) => p !== 'body').join('.') : '';
          const msg = item.msg ?? JSON.stringify(item);
          return where ? `${where}: ${msg}` : msg;
        }
        return String(item);
      })
      .join('; ');
  }
  if (typeof detail === 'object') return detail.message ?? detail.msg ?? JSON.stringify(detail);
  return String(detail);
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// Session state: the CSRF token from the login response or GET /auth/me (null until then, and
// for a bearer token). Sent as X-CSRF-Token on every request other than GET/HEAD.
let csrfToken = null;
const unauthorizedListeners = new Set();

export function getCsrfToken() {
  return csrfToken;
}

export function setCsrfToken(token) {
  csrfToken = typeof token === 'string' && token ? token : null;
}

/**
 * Call `listener(error)` whenever an API call answers 401 (the session is gone: expired, logged
 * out elsewhere, user disabled). The error carries the server's reason. Returns an unsubscribe
 * function. A wrong password at login does not count (the login form shows that itself).
 */
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

function readHeader(response, name) {
  try {
    return response.headers?.get?.(name) ?? null;
  } catch {
    return null;
  }
}

async function request(path, init = {}, { notify401 = true, allowEmpty = false } = {}) {
  const method = (init.method ?? 'GET').toUpperCase();
  const headers = { ...(init.headers ?? {}) };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(`${API_BASE}${path}`, { ...init, method, headers, credentials: 'same-origin' });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(`Network error: could not reach the server (${err?.message ?? err}).`, 0);
  }
  const body = await readBody(response);
  if (!response.ok) {
    let reason = '';
    if (body && typeof body === 'object') reason = detailToMessage(body.detail ?? body.error ?? body.message);
    // Non-JSON bodies (e.g. an nginx HTML error page) are not shown verbatim.
    if (!reason) reason = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
    const error = new ApiError(reason, response.status, body);
    error.retryAfter = readHeader(response, 'Retry-After');
    if (response.status === 401 && notify401) {
      csrfToken = null;
      for (const listener of [...unauthorizedListeners]) listener(error);
    }
    throw error;
  }
  if (body === null && allowEmpty) return null;
  if (body === null || typeof body !== 'object') {
    throw new ApiError('The server returned an unexpected (non-JSON) response.', response.status, body);
  }
  return body;
}

/** "30 seconds", "1 minute", "14 minutes", "2 hours 5 minutes"; from a Retry-After value. */
export function retryAfterInWords(value, now = Date.now()) {
  if (value == null || value === '') return null;
  let seconds = Number(value);
  if (!Number.isFinite(seconds)) {
    const when = Date.parse(String(value));
    if (Number.isNaN(when)) return null;
    seconds = (when - now) / 1000;
  }
  seconds = Math.max(1, Math.ceil(seconds));
  const unit = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (seconds < 60) return unit(seconds, 'second');
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return unit(minutes, 'minute');
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${unit(hours, 'hour')} ${unit(rest, 'minute')}` : unit(hours, 'hour');
}

/**
 * POST /api/upload as multipart/form-data with field `pdf_file` and optional `collection_name`.
 * Resolves to the server's JSON, e.g. {document_id, filename, chunks, collection_name}.
 */
export function uploadPdf(file, collectionName, { signal } = {}) {
  const form = new FormData();
  form.append('pdf_file', file, file?.name);
  const name = (collectionName ?? '').trim();
  if (name) form.append('collection_name', name);
  // No Content-Type header: the browser sets the multipart boundary itself.
  return request('/upload', { method: 'POST', headers: { Accept: 'application/json' }, body: form, signal });
}

/**
 * POST /api/query with JSON {query, collection_name}.
 * Resolves to {result: string, sources: [{filename, page, chunk, score, text}]}.
 */
export function askQuestion(query, collectionName, { signal } = {}) {
  const collection_name = (collectionName ?? '').trim() || DEFAULT_COLLECTION;
  return request('/query', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ query, collection_name }),
    signal,
  });
}

const JSON_ACCEPT = { Accept: 'application/json' };

/** GET /api/collections -> {collections: [{name, documents, updated_at}]}. */
export function listCollections({ signal } = {}) {
  return request('/collections', { method: 'GET', headers: JSON_ACCEPT, signal });
}

/**
 * GET /api/collections/{name}/documents -> {collection, documents: [{id, filename, sha256, size,
 * chunks, s3_key, s3_version_id, uploaded_at}]}. Rejects with status 404 for an unknown collection.
 */
export function listDocuments(collection, { signal } = {}) {
  const name = String(collection ?? '').trim();
  if (!name) return Promise.reject(new ApiError('A collection name is required.', 0));
  return request(`/collections/${encodeURIComponent(name)}/documents`, {
    method: 'GET',
    headers: JSON_ACCEPT,
    signal,
  });
}

/**
 * GET /api/history?limit=&before=&collection= -> {entries: [...], next_before: int|null}, newest first.
 * Parameters left undefined, null or blank are not sent.
 */
export function listHistory({ limit, before, collection, signal } = {}) {
  const params = new URLSearchParams();
  if (limit != null && limit !== '') params.set('limit', String(limit));
  if (before != null && before !== '') params.set('before', String(before));
  const name = String(collection ?? '').trim();
  if (name) params.set('collection', name);
  const query = params.toString();
  return request(`/history${query ? `?${query}` : ''}`, { method: 'GET', headers: JSON_ACCEPT, signal });
}

/**
 * DELETE /api/documents/{id} -> {id, collection, filename, chunks_removed, s3_versions_removed,
 * history_entries_scrubbed}. Rejects with status 404 when the document is unknown.
 */
export function deleteDocument(id, { signal } = {}) {
  const key = String(id ?? '').trim();
  if (!key) return Promise.reject(new ApiError('A document id is required.', 0));
  return request(`/documents/${encodeURIComponent(key)}`, { method: 'DELETE', headers: JSON_ACCEPT, signal });
}

const JSON_SEND = { 'Content-Type': 'application/json', Accept: 'application/json' };
const seg = (value) => encodeURIComponent(String(value ?? '').trim());

// ---- Identity (docs/access-control.md) ----

/**
 * POST /api/auth/login {username, password} -> {user: {username, role}, csrf_token}; the server
 * sets the session cookie. A 401 here is a wrong username or password (no unauthorized event);
 * a 429 carries `retryAfter` (the Retry-After header).
 */
export async function login(username, password, { signal } = {}) {
  const data = await request(
    '/auth/login',
    { method: 'POST', headers: JSON_SEND, body: JSON.stringify({ username, password }), signal },
    { notify401: false },
  );
  setCsrfToken(data.csrf_token);
  return data;
}

/** POST /api/auth/logout -> 204; forgets the CSRF token either way. */
export async function logout({ signal } = {}) {
  try {
    return await request('/auth/logout', { method: 'POST', headers: JSON_ACCEPT, signal }, { notify401: false, allowEmpty: true });
  } finally {
    setCsrfToken(null);
  }
}

/**
 * GET /api/auth/me -> {username, role, grants: [{collection, permission}], csrf_token}.
 * Keeps the CSRF token. A 401 (not logged in) rejects without the unauthorized event.
 */
export async function me({ signal } = {}) {
  const data = await request('/auth/me', { method: 'GET', headers: JSON_ACCEPT, signal }, { notify401: false });
  setCsrfToken(data.csrf_token);
  return data;
}

/** GET /api/users (admin) -> {users: [{username, role, disabled, created_at, last_login_at, ..., grants}]}. */
export function listUsers({ signal } = {}) {
  return request('/users', { method: 'GET', headers: JSON_ACCEPT, signal });
}

/** POST /api/users (admin) {username, password, role} -> 201 user; 409 if the name is taken. */
export function createUser({ username, password, role }, { signal } = {}) {
  return request('/users', { method: 'POST', headers: JSON_SEND, body: JSON.stringify({ username, password, role }), signal });
}

/** PATCH /api/users/{username} (admin) with any of {role, password, disabled, storage_quota_bytes} -> user. */
export function updateUser(username, changes, { signal } = {}) {
  return request(`/users/${seg(username)}`, { method: 'PATCH', headers: JSON_SEND, body: JSON.stringify(changes), signal });
}

/** PUT /api/users/{username}/grants/{collection} (admin) {permission: "read"|"write"}. */
export function setGrant(username, collection, permission, { signal } = {}) {
  return request(`/users/${seg(username)}/grants/${seg(collection)}`, {
    method: 'PUT',
    headers: JSON_SEND,
    body: JSON.stringify({ permission }),
    signal,
  });
}

/** DELETE /api/users/{username}/grants/{collection} (admin) -> 204; 404 if there is no such grant. */
export function removeGrant(username, collection, { signal } = {}) {
  return request(
    `/users/${seg(username)}/grants/${seg(collection)}`,
    { method: 'DELETE', headers: JSON_ACCEPT, signal },
    { allowEmpty: true },
  );
}

/** GET /api/tokens -> {tokens: [...]}: own tokens; `all: true` (admin) everyone's, with `username`. */
export function listTokens({ all = false, signal } = {}) {
  return request(`/tokens${all ? '?all=true' : ''}`, { method: 'GET', headers: JSON_ACCEPT, signal });
}

/** POST /api/tokens {name, expires_in_days} -> 201 {id, name, prefix, expires_at, token} (token shown once). */
export function createToken({ name, expiresInDays }, { signal } = {}) {
  return request('/tokens', {
    method: 'POST',
    headers: JSON_SEND,
    body: JSON.stringify({ name, expires_in_days: expiresInDays }),
    signal,
  });
}

/** DELETE /api/tokens/{id} -> 204 (revoked; idempotent). */
export function revokeToken(id, { signal } = {}) {
  return request(`/tokens/${seg(id)}`, { method: 'DELETE', headers: JSON_ACCEPT, signal }, { allowEmpty: true });
}

/** POST /api/collections (admin) {name} -> 201 {name}; 409 if it exists. */
export function createCollection(name, { signal } = {}) {
  return request('/collections', {
    method: 'POST',
    headers: JSON_SEND,
    body: JSON.stringify({ name: String(name ?? '').trim() }),
    signal,
  });
}

/** GET /api/audit?limit=&before= (admin) -> {events: [...], next_before}, newest first. */
export function listAudit({ limit, before, signal } = {}) {
  const params = new URLSearchParams();
  if (limit != null && limit !== '') params.set('limit', String(limit));
  if (before != null && before !== '') params.set('before', String(before));
  const query = params.toString();
  return request(`/audit${query ? `?${query}` : ''}`, { method: 'GET', headers: JSON_ACCEPT, signal });
}
