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

async function request(path, init) {
  let response;
  try {
    response = await fetch(`${API_BASE}${path}`, init);
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
    throw new ApiError(reason, response.status, body);
  }
  if (body === null || typeof body !== 'object') {
    throw new ApiError('The server returned an unexpected (non-JSON) response.', response.status, body);
  }
  return body;
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
