import { vi } from 'vitest';

/** A minimal fetch Response stand-in: status, statusText, ok, headers.get(), text(). */
export function fakeResponse(status, body, statusText = '', headers = {}) {
  const text = body === undefined || body === null ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return {
    status,
    statusText,
    ok: status >= 200 && status < 300,
    headers: { get: (name) => lower[String(name).toLowerCase()] ?? null },
    text: async () => text,
    json: async () => JSON.parse(text),
  };
}

/** The `GET /auth/me` answers used by the tests. */
export const ADMIN_ME = { username: 'root', role: 'admin', grants: [], csrf_token: 'csrf-admin' };
export const EDITOR_ME = {
  username: 'erin',
  role: 'editor',
  grants: [
    { collection: 'sales', permission: 'write' },
    { collection: 'querygpt', permission: 'read' },
  ],
  csrf_token: 'csrf-editor',
};
export const VIEWER_ME = {
  username: 'vic',
  role: 'viewer',
  grants: [{ collection: 'querygpt', permission: 'read' }],
  csrf_token: 'csrf-viewer',
};

const isMe = (url, init) => String(url).endsWith('/auth/me') && (init?.method ?? 'GET') === 'GET';

/**
 * Replace global fetch with a mock resolving to the given responses in order, except that
 * `GET /auth/me` answers `session` (a me object -> 200, a fakeResponse as is, null -> not
 * answered: then it takes its turn in the queue like any call).
 */
export function mockFetchAs(session, ...responses) {
  // Queued answers are thunks, so mockReturnValueOnce & co. (redirected here) keep their order
  // with the responses given up front, and the session answer never consumes one.
  const queue = [];
  const fn = vi.fn((url, init) => {
    if (session && isMe(url, init)) {
      return Promise.resolve('status' in session && 'ok' in session ? session : fakeResponse(200, session));
    }
    const next = queue.shift();
    return next ? next() : undefined;
  });
  fn.mockReturnValueOnce = (value) => (queue.push(() => value), fn);
  fn.mockResolvedValueOnce = (value) => (queue.push(() => Promise.resolve(value)), fn);
  fn.mockRejectedValueOnce = (error) => (queue.push(() => Promise.reject(error)), fn);
  for (const r of responses) {
    if (r instanceof Error) fn.mockRejectedValueOnce(r);
    else fn.mockResolvedValueOnce(r);
  }
  vi.stubGlobal('fetch', fn);
  return fn;
}

/** As mockFetchAs, logged in as an admin: what App needs to get past its login check. */
export function mockFetch(...responses) {
  return mockFetchAs(ADMIN_ME, ...responses);
}

/**
 * Replace global fetch with a mock answering by "METHOD /api/path" (the full URL with its query
 * first, then the path alone). A value is a JSON body (200), a fakeResponse, or a function
 * (url, init) returning either. Unrouted calls answer 404.
 */
export function mockRoutes(routes) {
  const fn = vi.fn(async (url, init) => {
    const method = init?.method ?? 'GET';
    const path = String(url).split('?')[0];
    const key = [`${method} ${url}`, `${method} ${path}`].find((k) => Object.hasOwn(routes, k));
    if (!key) return fakeResponse(404, { detail: `no mock for ${method} ${url}` }, 'Not Found');
    let answer = routes[key];
    if (typeof answer === 'function') answer = await answer(url, init);
    if (answer instanceof Error) throw answer;
    return answer && 'status' in answer && 'ok' in answer ? answer : fakeResponse(200, answer);
  });
  vi.stubGlobal('fetch', fn);
  return fn;
}

/** The calls a fetch mock received, as [method, url, init], optionally only those matching. */
export function callsTo(fetchMock, method, url) {
  return fetchMock.mock.calls
    .map(([u, init]) => [init?.method ?? 'GET', u, init])
    .filter(([m, u]) => (!method || m === method) && (!url || u === url));
}

/** A deferred promise, to observe in-flight UI states. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export function pdfFile(name = 'schema.pdf') {
  return new File(['%PDF-1.4\n%fake\n'], name, { type: 'application/pdf' });
}

/**
 * Install a navigator.clipboard stand-in: pass a writeText mock, or null for "no clipboard API".
 * src/test/setup.js removes it after each test.
 */
export function mockClipboard(writeText) {
  const value = writeText === null ? undefined : { writeText };
  Object.defineProperty(window.navigator, 'clipboard', { value, configurable: true, writable: true });
  return writeText;
}
