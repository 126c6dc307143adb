import { vi } from 'vitest';

/** A minimal fetch Response stand-in: status, statusText, ok, text(). */
export function fakeResponse(status, body, statusText = '') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {
    status,
    statusText,
    ok: status >= 200 && status < 300,
    text: async () => text,
    json: async () => JSON.parse(text),
  };
}

/** Replace global fetch with a mock resolving to the given responses in order. */
export function mockFetch(...responses) {
  const fn = vi.fn();
  for (const r of responses) {
    if (r instanceof Error) fn.mockRejectedValueOnce(r);
    else fn.mockResolvedValueOnce(r);
  }
  vi.stubGlobal('fetch', fn);
  return fn;
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
