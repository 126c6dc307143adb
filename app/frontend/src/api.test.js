import { describe, expect, it } from 'vitest';
import { ApiError, askQuestion, deleteDocument, detailToMessage, listCollections, listDocuments, listHistory, uploadPdf } from './api.js';
import { fakeResponse, mockFetch, pdfFile } from './test/helpers.js';

describe('uploadPdf', () => {
  it('POSTs multipart form data with pdf_file and collection_name to /api/upload', async () => {
    const reply = { document_id: 'd1', filename: 'schema.pdf', chunks: 7, collection_name: 'sales' };
    const fetchMock = mockFetch(fakeResponse(200, reply));
    const file = pdfFile();

    await expect(uploadPdf(file, '  sales  ')).resolves.toEqual(reply);

    expect(fetchMock).toHaveBeenCalledTimes(1);
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/upload');
    expect(init.method).toBe('POST');
    expect(init.body).toBeInstanceOf(FormData);
    const sent = init.body.get('pdf_file');
    expect(sent).toBeInstanceOf(File);
    expect(sent.name).toBe('schema.pdf');
    expect(init.body.get('collection_name')).toBe('sales');
    expect([...init.body.keys()].sort()).toEqual(['collection_name', 'pdf_file']);
    // The browser must set the multipart boundary itself.
    const headers = Object.keys(init.headers ?? {}).map((h) => h.toLowerCase());
    expect(headers).not.toContain('content-type');
  });

  it('omits collection_name when it is blank', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { filename: 'schema.pdf' }));
    await uploadPdf(pdfFile(), '   ');
    const form = fetchMock.mock.calls[0][1].body;
    expect(form.has('pdf_file')).toBe(true);
    expect(form.has('collection_name')).toBe(false);
  });

  it('rejects with the server detail and status on 4xx', async () => {
    mockFetch(fakeResponse(400, { detail: 'Only PDF files are accepted' }, 'Bad Request'));
    const err = await uploadPdf(pdfFile('notes.txt'), 'querygpt').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.message).toBe('Only PDF files are accepted');
  });

  it('falls back to the HTTP status for non-JSON error bodies (e.g. nginx 413 page)', async () => {
    mockFetch(fakeResponse(413, '<html><body>413 Request Entity Too Large</body></html>', 'Request Entity Too Large'));
    const err = await uploadPdf(pdfFile(), 'querygpt').catch((e) => e);
    expect(err.status).toBe(413);
    expect(err.message).toBe('HTTP 413 Request Entity Too Large');
  });

  it('reports network failures as ApiError with status 0', async () => {
    mockFetch(new TypeError('Failed to fetch'));
    const err = await uploadPdf(pdfFile(), 'querygpt').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(0);
    expect(err.message).toMatch(/Network error/);
  });
});

describe('askQuestion', () => {
  it('POSTs JSON {query, collection_name} to /api/query', async () => {
    const reply = { result: 'SELECT 1;', sources: [] };
    const fetchMock = mockFetch(fakeResponse(200, reply));

    await expect(askQuestion('How many users?', 'sales')).resolves.toEqual(reply);

    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/query');
    expect(init.method).toBe('POST');
    expect(init.headers['Content-Type']).toBe('application/json');
    expect(JSON.parse(init.body)).toEqual({ query: 'How many users?', collection_name: 'sales' });
  });

  it('defaults collection_name to "querygpt" when blank', async () => {
    const fetchMock = mockFetch(fakeResponse(200, { result: '', sources: [] }));
    await askQuestion('q', '');
    expect(JSON.parse(fetchMock.mock.calls[0][1].body)).toEqual({ query: 'q', collection_name: 'querygpt' });
  });

  it('rejects with the server detail on 5xx', async () => {
    mockFetch(fakeResponse(503, { detail: 'LLM backend unavailable' }, 'Service Unavailable'));
    const err = await askQuestion('q', 'querygpt').catch((e) => e);
    expect(err.status).toBe(503);
    expect(err.message).toBe('LLM backend unavailable');
  });

  it('rejects a 200 response that is not JSON', async () => {
    mockFetch(fakeResponse(200, '<!doctype html><html></html>'));
    await expect(askQuestion('q', 'querygpt')).rejects.toThrow(/non-JSON/);
  });
});

describe('detailToMessage', () => {
  it('flattens FastAPI validation error lists', () => {
    const detail = [
      { loc: ['body', 'query'], msg: 'Field required', type: 'missing' },
      { loc: ['body', 'collection_name'], msg: 'String should have at least 1 character' },
    ];
    expect(detailToMessage(detail)).toBe(
      'query: Field required; collection_name: String should have at least 1 character',
    );
  });
});

describe('listCollections', () => {
  it('GETs /api/collections and passes the abort signal', async () => {
    const reply = { collections: [{ name: 'sales', documents: 2, updated_at: '2026-01-02T03:04:05Z' }] };
    const fetchMock = mockFetch(fakeResponse(200, reply));
    const controller = new AbortController();
    await expect(listCollections({ signal: controller.signal })).resolves.toEqual(reply);
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/collections');
    expect(init.method).toBe('GET');
    expect(init.signal).toBe(controller.signal);
  });

  it('rejects with the server detail on 5xx', async () => {
    mockFetch(fakeResponse(503, { detail: 'database unavailable' }, 'Service Unavailable'));
    const err = await listCollections().catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(503);
    expect(err.message).toBe('database unavailable');
  });

  it('lets an abort propagate as AbortError (not a network error)', async () => {
    const abort = new DOMException('The operation was aborted.', 'AbortError');
    mockFetch().mockRejectedValueOnce(abort); // jsdom's DOMException is not an Error instance
    await expect(listCollections()).rejects.toBe(abort);
  });
});

describe('listDocuments', () => {
  it('GETs the documents of a collection, URL-encoding its name', async () => {
    const reply = { collection: 'a b/c', documents: [] };
    const fetchMock = mockFetch(fakeResponse(200, reply));
    const controller = new AbortController();
    await expect(listDocuments(' a b/c ', { signal: controller.signal })).resolves.toEqual(reply);
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/collections/a%20b%2Fc/documents');
    expect(init.method).toBe('GET');
    expect(init.signal).toBe(controller.signal);
  });

  it('rejects with status 404 and the reason for an unknown collection', async () => {
    mockFetch(fakeResponse(404, { detail: "Collection 'nope' not found" }, 'Not Found'));
    const err = await listDocuments('nope').catch((e) => e);
    expect(err.status).toBe(404);
    expect(err.message).toBe("Collection 'nope' not found");
  });

  it('does not call the API without a collection name', async () => {
    const fetchMock = mockFetch();
    await expect(listDocuments('  ')).rejects.toBeInstanceOf(ApiError);
    expect(fetchMock).not.toHaveBeenCalled();
  });
});

describe('listHistory', () => {
  it('GETs /api/history with limit, before and collection', async () => {
    const reply = { entries: [], next_before: null };
    const fetchMock = mockFetch(fakeResponse(200, reply));
    const controller = new AbortController();
    await expect(
      listHistory({ limit: 50, before: 120, collection: ' sales & co ', signal: controller.signal }),
    ).resolves.toEqual(reply);
    const [url, init] = fetchMock.mock.calls[0];
    const parsed = new URL(url, 'http://x');
    expect(parsed.pathname).toBe('/api/history');
    expect(Object.fromEntries(parsed.searchParams)).toEqual({ limit: '50', before: '120', collection: 'sales & co' });
    expect(init.method).toBe('GET');
    expect(init.signal).toBe(controller.signal);
  });

  it('omits parameters that are not given (before 0 is kept)', async () => {
    const fetchMock = mockFetch(
      fakeResponse(200, { entries: [], next_before: null }),
      fakeResponse(200, { entries: [], next_before: null }),
    );
    await listHistory();
    expect(fetchMock.mock.calls[0][0]).toBe('/api/history');
    await listHistory({ limit: 10, before: 0, collection: '' });
    expect(fetchMock.mock.calls[1][0]).toBe('/api/history?limit=10&before=0');
  });

  it('rejects with FastAPI validation details flattened', async () => {
    mockFetch(fakeResponse(422, { detail: [{ loc: ['query', 'limit'], msg: 'Input should be a valid integer' }] }));
    const err = await listHistory({ limit: 'x' }).catch((e) => e);
    expect(err.status).toBe(422);
    expect(err.message).toBe('query.limit: Input should be a valid integer');
  });
});

describe('deleteDocument', () => {
  it('DELETEs /api/documents/{id} and resolves to the removal report', async () => {
    const reply = {
      id: '6f1c',
      collection: 'sales',
      filename: 'schema.pdf',
      chunks_removed: 12,
      s3_versions_removed: 2,
      history_entries_scrubbed: 3,
    };
    const fetchMock = mockFetch(fakeResponse(200, reply));
    const controller = new AbortController();
    await expect(deleteDocument('6f1c', { signal: controller.signal })).resolves.toEqual(reply);
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe('/api/documents/6f1c');
    expect(init.method).toBe('DELETE');
    expect(init.signal).toBe(controller.signal);
  });

  it('rejects with status 404 and the server reason when the document is unknown', async () => {
    mockFetch(fakeResponse(404, { detail: 'Document 6f1c not found' }, 'Not Found'));
    const err = await deleteDocument('6f1c').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(404);
    expect(err.message).toBe('Document 6f1c not found');
  });

  it('reports network failures as ApiError with status 0', async () => {
    mockFetch(new TypeError('Failed to fetch'));
    const err = await deleteDocument('6f1c').catch((e) => e);
    expect(err.status).toBe(0);
    expect(err.message).toMatch(/Network error/);
  });
});
