import { describe, expect, it } from 'vitest';
import { ApiError, askQuestion, detailToMessage, uploadPdf } from './api.js';
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
