import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen } from '@testing-library/react';
import UploadPage from './UploadPage.jsx';
import { deferred, fakeResponse, mockFetch, pdfFile } from '../test/helpers.js';

function chooseFile(file) {
  fireEvent.change(screen.getByLabelText('Schema PDF'), { target: { files: [file] } });
}

describe('UploadPage', () => {
  it('renders labelled controls with the default collection', () => {
    render(<UploadPage />);
    const fileInput = screen.getByLabelText('Schema PDF');
    expect(fileInput.type).toBe('file');
    expect(fileInput.accept).toContain('application/pdf');
    expect(screen.getByLabelText('Collection').value).toBe('querygpt');
    expect(screen.getByRole('button', { name: 'Upload' })).toBeTruthy();
    expect(screen.getByRole('status')).toBeTruthy();
  });

  it('uploads the chosen PDF and shows the server result', async () => {
    const pending = deferred();
    const fetchMock = mockFetch();
    fetchMock.mockReturnValueOnce(pending.promise);
    render(<UploadPage />);

    chooseFile(pdfFile('schema.pdf'));
    fireEvent.change(screen.getByLabelText('Collection'), { target: { value: 'sales' } });
    fireEvent.click(screen.getByRole('button', { name: 'Upload' }));

    // In-flight state: status text, progress bar, disabled button.
    expect(screen.getByRole('status').textContent).toMatch(/Uploading schema\.pdf/);
    expect(screen.getByRole('progressbar')).toBeTruthy();
    expect(screen.getByRole('button', { name: /Uploading/ }).disabled).toBe(true);

    pending.resolve(
      fakeResponse(200, { document_id: 'doc-42', filename: 'schema.pdf', chunks: 12, collection_name: 'sales' }),
    );

    const result = await screen.findByTestId('upload-result');
    expect(screen.getByRole('status').textContent).toBe(
      'Uploaded schema.pdf: 12 chunks indexed into collection “sales”.',
    );
    expect(result.textContent).toContain('doc-42');
    expect(result.textContent).toContain('12');
    expect(screen.getByRole('button', { name: 'Upload' }).disabled).toBe(false);

    const form = fetchMock.mock.calls[0][1].body;
    expect(form.get('pdf_file').name).toBe('schema.pdf');
    expect(form.get('collection_name')).toBe('sales');
  });

  it("shows the server's reason on a 4xx", async () => {
    mockFetch(fakeResponse(400, { detail: 'File is not a valid PDF' }, 'Bad Request'));
    render(<UploadPage />);

    chooseFile(pdfFile('broken.pdf'));
    fireEvent.click(screen.getByRole('button', { name: 'Upload' }));

    const status = screen.getByRole('status');
    await screen.findByText(/File is not a valid PDF/);
    expect(status.textContent).toBe('Upload failed (HTTP 400): File is not a valid PDF');
    expect(screen.queryByTestId('upload-result')).toBeNull();
  });

  it("shows the server's reason on a 5xx", async () => {
    mockFetch(fakeResponse(500, { detail: 'Vector store unavailable' }, 'Internal Server Error'));
    render(<UploadPage />);
    chooseFile(pdfFile());
    fireEvent.click(screen.getByRole('button', { name: 'Upload' }));
    await screen.findByText('Upload failed (HTTP 500): Vector store unavailable');
  });

  it('asks for a file instead of calling the API when none is chosen', () => {
    const fetchMock = mockFetch();
    render(<UploadPage />);
    fireEvent.click(screen.getByRole('button', { name: 'Upload' }));
    expect(screen.getByRole('status').textContent).toMatch(/Choose a PDF file/);
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it('says that re-uploading a filename into the same collection replaces the old document', () => {
    render(<UploadPage />);
    expect(screen.getByTestId('replace-note').textContent).toMatch(
      /same name into the same collection replaces the earlier document/,
    );
  });
});
