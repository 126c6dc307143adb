import { describe, expect, it, vi } from 'vitest';
import {
  ApiError,
  askQuestion,
  createCollection,
  createToken,
  createUser,
  getCsrfToken,
  listAudit,
  listCollections,
  listTokens,
  listUsers,
  login,
  logout,
  me,
  onUnauthorized,
  removeGrant,
  retryAfterInWords,
  revokeToken,
  setGrant,
  updateUser,
} from './api.js';
import { ADMIN_ME, fakeResponse, mockFetchAs } from './test/helpers.js';

const LOGIN_OK = { user: { username: 'root', role: 'admin' }, csrf_token: 'tok-123' };
const headerOf = (init, name) => init.headers?.[name];

describe('login, me and the CSRF token', () => {
  it('logs in with credentials same-origin and keeps the CSRF token for writes only', async () => {
    const fetchMock = mockFetchAs(
      null,
      fakeResponse(200, LOGIN_OK),
      fakeResponse(200, { collections: [] }),
      fakeResponse(200, { result: 'SELECT 1;', sources: [] }),
    );
    await expect(login('root', 'correct horse battery')).resolves.toEqual(LOGIN_OK);
    expect(getCsrfToken()).toBe('tok-123');

    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/auth/login');
    expect(init.method).toBe('POST');
    expect(init.credentials).toBe('same-origin');
    expect(JSON.parse(init.body)).toEqual({ username: 'root', password: 'correct horse battery' });

    await listCollections();
    const get = fetchMock.mock.calls[1][1];
    expect(get.credentials).toBe('same-origin');
    expect(headerOf(get, 'X-CSRF-Token')).toBeUndefined();

    await askQuestion('q', 'sales');
    const post = fetchMock.mock.calls[2][1];
    expect(post.credentials).toBe('same-origin');
    expect(headerOf(post, 'X-CSRF-Token')).toBe('tok-123');
    expect(headerOf(post, 'Content-Type')).toBe('application/json');
  });

  it('takes the CSRF token from GET /auth/me', async () => {
    mockFetchAs(null, fakeResponse(200, ADMIN_ME));
    await expect(me()).resolves.toEqual(ADMIN_ME);
    expect(getCsrfToken()).toBe('csrf-admin');
  });

  it('a wrong password rejects with the reason and does not signal a lost session', async () => {
    mockFetchAs(null, fakeResponse(401, { detail: 'Invalid username or password' }, 'Unauthorized'));
    const listener = vi.fn();
    const off = onUnauthorized(listener);
    const err = await login('root', 'wrong password!').catch((e) => e);
    off();
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(401);
    expect(err.message).toBe('Invalid username or password');
    expect(listener).not.toHaveBeenCalled();
  });

  it('a 429 carries Retry-After', async () => {
    mockFetchAs(null, fakeResponse(429, { detail: 'Too many failed logins' }, 'Too Many Requests', { 'Retry-After': '840' }));
    const err = await login('root', 'x').catch((e) => e);
    expect(err.status).toBe(429);
    expect(err.retryAfter).toBe('840');
  });

  it('a 401 on any other call signals the lost session with the reason and forgets the token', async () => {
    mockFetchAs(null, fakeResponse(200, LOGIN_OK), fakeResponse(401, { detail: 'Session expired' }, 'Unauthorized'));
    await login('root', 'correct horse battery');
    const listener = vi.fn();
    const off = onUnauthorized(listener);
    const err = await listCollections().catch((e) => e);
    off();
    expect(err.status).toBe(401);
    expect(listener).toHaveBeenCalledTimes(1);
    expect(listener.mock.calls[0][0].message).toBe('Session expired');
    expect(getCsrfToken()).toBeNull();
  });

  it('logs out (204, CSRF header sent) and forgets the token', async () => {
    const fetchMock = mockFetchAs(null, fakeResponse(200, LOGIN_OK), fakeResponse(204, null, 'No Content'));
    await login('root', 'correct horse battery');
    await expect(logout()).resolves.toBeNull();
    const [url, init] = fetchMock.mock.calls[1];
    expect(url).toBe('/api/auth/logout');
    expect(init.method).toBe('POST');
    expect(headerOf(init, 'X-CSRF-Token')).toBe('tok-123');
    expect(getCsrfToken()).toBeNull();
  });
});

describe('identity endpoints', () => {
  it('send the documented requests', async () => {
    const fetchMock = mockFetchAs(
      null,
      fakeResponse(200, LOGIN_OK),
      fakeResponse(200, { users: [] }),
      fakeResponse(201, { username: 'alice', role: 'editor' }),
      fakeResponse(200, { username: 'alice', role: 'viewer' }),
      fakeResponse(200, { username: 'alice', collection: 'sales & co', permission: 'read' }),
      fakeResponse(204, null),
      fakeResponse(200, { tokens: [] }),
      fakeResponse(200, { tokens: [] }),
      fakeResponse(201, { id: 't1', name: 'ci', prefix: 'qgpt_abcdefg', expires_at: null, token: 'qgpt_x' }),
      fakeResponse(204, null),
      fakeResponse(201, { name: 'hr' }),
      fakeResponse(200, { events: [], next_before: null }),
    );
    await login('root', 'correct horse battery');
    await listUsers();
    await createUser({ username: 'alice', password: 'long enough password', role: 'editor' });
    await updateUser('alice', { role: 'viewer' });
    await setGrant('alice', 'sales & co', 'read');
    await expect(removeGrant('alice', 'sales & co')).resolves.toBeNull();
    await listTokens();
    await listTokens({ all: true });
    await createToken({ name: 'ci', expiresInDays: 30 });
    await revokeToken('t1');
    await createCollection(' hr ');
    await listAudit({ limit: 50, before: 99 });

    const calls = fetchMock.mock.calls.slice(1).map(([url, init]) => [
      init.method,
      url,
      init.body ? JSON.parse(init.body) : undefined,
      init.headers['X-CSRF-Token'],
    ]);
    expect(calls).toEqual([
      ['GET', '/api/users', undefined, undefined],
      ['POST', '/api/users', { username: 'alice', password: 'long enough password', role: 'editor' }, 'tok-123'],
      ['PATCH', '/api/users/alice', { role: 'viewer' }, 'tok-123'],
      ['PUT', '/api/users/alice/grants/sales%20%26%20co', { permission: 'read' }, 'tok-123'],
      ['DELETE', '/api/users/alice/grants/sales%20%26%20co', undefined, 'tok-123'],
      ['GET', '/api/tokens', undefined, undefined],
      ['GET', '/api/tokens?all=true', undefined, undefined],
      ['POST', '/api/tokens', { name: 'ci', expires_in_days: 30 }, 'tok-123'],
      ['DELETE', '/api/tokens/t1', undefined, 'tok-123'],
      ['POST', '/api/collections', { name: 'hr' }, 'tok-123'],
      ['GET', '/api/audit?limit=50&before=99', undefined, undefined],
    ]);
  });
});

describe('retryAfterInWords', () => {
  it('puts seconds and HTTP dates into words', () => {
    expect(retryAfterInWords('1')).toBe('1 second');
    expect(retryAfterInWords('45')).toBe('45 seconds');
    expect(retryAfterInWords('60')).toBe('1 minute');
    expect(retryAfterInWords('840')).toBe('14 minutes');
    expect(retryAfterInWords('3900')).toBe('1 hour 5 minutes');
    expect(retryAfterInWords('7200')).toBe('2 hours');
    const now = Date.parse('2026-12-04T12:00:00Z');
    expect(retryAfterInWords('Fri, 04 Dec 2026 12:02:00 GMT', now)).toBe('2 minutes');
    expect(retryAfterInWords(null)).toBeNull();
    expect(retryAfterInWords('soon')).toBeNull();
  });
});
