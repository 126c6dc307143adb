import { useEffect, useId, useRef, useState } from 'react';
import { uploadPdf } from '../api.js';
import { useCollection } from '../components/useCollection.js';
import { pickFrom } from '../components/access.js';
import CollectionField from '../components/CollectionField.jsx';

function describeError(err) {
  const reason = err?.message || 'Unknown error';
  return err?.status ? `Upload failed (HTTP ${err.status}): ${reason}` : `Upload failed: ${reason}`;
}

// `collections`: the collections the user may write (a choice), or null for free text (admin).
export default function UploadPage({ collection, onCollectionChange, onUploaded, collections = null }) {
  const [chosenCollection, setCollectionName] = useCollection(collection, onCollectionChange);
  const collectionName = pickFrom(collections, chosenCollection);
  const noChoice = Array.isArray(collections) && collections.length === 0;
  // Offered a choice that excludes the shared name: the first offered becomes the shared one.
  useEffect(() => {
    if (collectionName && collectionName !== chosenCollection) setCollectionName(collectionName);
  }, [collectionName, chosenCollection, setCollectionName]);
  const [file, setFile] = useState(null);
  const [state, setState] = useState({ phase: 'idle' });
  const inFlight = useRef(false);
  const fileId = useId();
  const busy = state.phase === 'uploading';

  function onFileChange(event) {
    const chosen = event.target.files?.[0] ?? null;
    setFile(chosen);
    setState({ phase: 'idle' });
  }

  async function onSubmit(event) {
    event.preventDefault();
    if (inFlight.current) return;
    if (!file) {
      setState({ phase: 'error', message: 'Choose a PDF file to upload first.' });
      return;
    }
    if (noChoice) {
      setState({ phase: 'error', message: 'You cannot upload to any collection.' });
      return;
    }
    inFlight.current = true;
    setState({ phase: 'uploading', filename: file.name });
    try {
      const data = await uploadPdf(file, collectionName);
      setState({ phase: 'success', data, filename: file.name });
      onUploaded?.(data);
    } catch (err) {
      setState({ phase: 'error', message: describeError(err) });
    } finally {
      inFlight.current = false;
    }
  }

  const data = state.phase === 'success' ? state.data : null;
  const uploadedCollection = data?.collection_name ?? (collectionName.trim() || 'querygpt');

  return (
    <section className="page">
      <h2 id="upload-heading">Upload schema documentation</h2>
      <p className="hint">
        Upload a PDF describing your database schema. It is split into chunks and indexed so
        questions on the Chat page can be answered with SQL.
      </p>
      <p className="hint" data-testid="replace-note">
        Uploading a file with the same name into the same collection replaces the earlier document.
        See or delete documents on the Documents page.
      </p>
      <form onSubmit={onSubmit} noValidate>
        <div className="field">
          <label htmlFor={fileId}>Schema PDF</label>
          <input
            id={fileId}
            name="pdf_file"
            type="file"
            accept="application/pdf,.pdf"
            onChange={onFileChange}
            disabled={busy}
          />
        </div>
        <CollectionField
          value={collectionName}
          onChange={setCollectionName}
          options={collections}
          disabled={busy}
          emptyHint="You hold write access to no collection; ask an admin for it."
        />
        <button type="submit" disabled={busy || noChoice}>
          {busy ? 'Uploading…' : 'Upload'}
        </button>
      </form>

      <div role="status" aria-live="polite" className={`status status-${state.phase}`}>
        {state.phase === 'uploading' && (
          <>
            <span>Uploading {state.filename}…</span>
            <progress aria-label="Upload progress" />
          </>
        )}
        {state.phase === 'success' && (
          <span>
            {`Uploaded ${data.filename ?? state.filename}` +
              (data.chunks != null ? `: ${data.chunks} chunks indexed` : '') +
              ` into collection “${uploadedCollection}”.`}
          </span>
        )}
        {state.phase === 'error' && <span className="error">{state.message}</span>}
      </div>

      {data && (
        <dl className="upload-result" data-testid="upload-result">
          {data.document_id != null && (
            <>
              <dt>Document ID</dt>
              <dd>{String(data.document_id)}</dd>
            </>
          )}
          <dt>File</dt>
          <dd>{data.filename ?? state.filename}</dd>
          {data.chunks != null && (
            <>
              <dt>Chunks</dt>
              <dd>{String(data.chunks)}</dd>
            </>
          )}
          <dt>Collection</dt>
          <dd>{uploadedCollection}</dd>
        </dl>
      )}
    </section>
  );
}
