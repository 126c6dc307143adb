import { useEffect, useRef, useState } from 'react';
import { deleteDocument, listCollections, listDocuments } from '../api.js';
import ConfirmBox from '../components/ConfirmBox.jsx';
import { useCollection } from '../components/useCollection.js';
import { countOf, describeError, formatBytes, formatDateTime, shortHash } from '../components/format.js';

function removalSummary(r, fallbackName) {
  const name = r?.filename ?? fallbackName;
  const where = r?.collection ? ` from “${r.collection}”` : '';
  return (
    `Deleted ${name}${where}: ${countOf(r?.chunks_removed, 'chunk')} removed, ` +
    `${countOf(r?.s3_versions_removed, 'stored version')} erased, ` +
    `excerpts scrubbed from ${countOf(r?.history_entries_scrubbed, 'history entry', 'history entries')}.`
  );
}

const ANYONE = () => true;

// `canWrite(collection)`: whether to offer Delete there (default: yes; the server decides anyway).
// `canUpload`: whether the empty state may point at the Upload page.
export default function DocumentsPage({ collection, onCollectionChange, canWrite = ANYONE, canUpload = true }) {
  const [sharedCollection, setSharedCollection] = useCollection(collection, onCollectionChange);
  const [collections, setCollections] = useState({ phase: 'loading', items: [] });
  const [selected, setSelected] = useState(null);
  const [docs, setDocs] = useState({ phase: 'idle', items: [] });
  const [confirming, setConfirming] = useState(null);
  const [deleting, setDeleting] = useState(false);
  const [message, setMessage] = useState(null);
  const [collectionsKey, setCollectionsKey] = useState(0);
  const [docsKey, setDocsKey] = useState(0);
  const cancelRef = useRef(null);
  const autoSelected = useRef(false);

  // Collections (with their document counts); reloaded after a delete so the counts stay right.
  useEffect(() => {
    const controller = new AbortController();
    setCollections((c) => ({ ...c, phase: 'loading' }));
    listCollections({ signal: controller.signal })
      .then((data) => {
        const items = Array.isArray(data.collections) ? data.collections : [];
        setCollections({ phase: 'ready', items });
        // Open the collection the other pages are using, once, if it exists.
        if (!autoSelected.current) {
          autoSelected.current = true;
          const shared = String(sharedCollection ?? '').trim();
          if (shared && items.some((c) => c.name === shared)) setSelected((s) => s ?? shared);
        }
      })
      .catch((err) => {
        if (err?.name === 'AbortError') return;
        setCollections({ phase: 'error', items: [], error: describeError('Loading collections', err) });
      });
    return () => controller.abort();
    // sharedCollection is deliberately not a dependency: it only picks the first selection.
  }, [collectionsKey]);

  // Documents of the selected collection.
  useEffect(() => {
    if (!selected) return undefined;
    const controller = new AbortController();
    setDocs((d) => ({ phase: 'loading', items: d.collection === selected ? d.items : [], collection: selected }));
    listDocuments(selected, { signal: controller.signal })
      .then((data) => {
        setDocs({
          phase: 'ready',
          collection: selected,
          items: Array.isArray(data.documents) ? data.documents : [],
        });
      })
      .catch((err) => {
        if (err?.name === 'AbortError') return;
        setDocs({ phase: 'error', collection: selected, items: [], error: describeError('Loading documents', err) });
      });
    return () => controller.abort();
  }, [selected, docsKey]);

  useEffect(() => {
    if (confirming) cancelRef.current?.focus();
  }, [confirming]);

  function select(name) {
    setSelected(name);
    setConfirming(null);
    setMessage(null);
    setSharedCollection(name);
  }

  function askToDelete(doc) {
    setMessage(null);
    setConfirming(doc);
  }

  function cancelDelete() {
    if (deleting) return;
    setMessage({ kind: 'info', text: `Kept ${confirming.filename}; nothing was deleted.` });
    setConfirming(null);
  }

  async function confirmDelete() {
    if (!confirming || deleting) return;
    const doc = confirming;
    setDeleting(true);
    setMessage({ kind: 'info', text: `Deleting ${doc.filename}…` });
    try {
      const result = await deleteDocument(doc.id);
      setMessage({ kind: 'ok', text: removalSummary(result, doc.filename) });
    } catch (err) {
      setMessage({ kind: 'error', text: describeError(`Deleting ${doc.filename}`, err) });
    } finally {
      setDeleting(false);
      setConfirming(null);
      // Refresh either way: after a 404 the list shows what the server really holds.
      setDocsKey((k) => k + 1);
      setCollectionsKey((k) => k + 1);
    }
  }

  const writable = Boolean(selected) && canWrite(selected);
  // Between a click on another collection and the effect above, `docs` still holds the previous
  // collection's rows: never show them (or their Delete buttons) under the new heading.
  const shown = !selected || docs.collection === selected ? docs : { phase: 'loading', items: [], collection: selected };

  let statusText = '';
  if (message) statusText = message.text;
  else if (collections.phase === 'loading' && collections.items.length === 0) statusText = 'Loading collections…';
  else if (shown.phase === 'loading') statusText = `Loading documents in “${shown.collection}”…`;

  return (
    <section className="page">
      <h2>Documents</h2>
      <p className="hint">
        Uploaded schema PDFs per collection. Deleting a document erases it completely: its indexed
        chunks, every stored version of the file, and the excerpts of it kept in question history.
      </p>

      <div
        role="status"
        aria-live="polite"
        className={`status${message?.kind === 'ok' ? ' status-success' : ''}`}
      >
        {statusText && <span className={message?.kind === 'error' ? 'error' : undefined}>{statusText}</span>}
      </div>

      <h3 id="collections-heading">Collections</h3>
      {collections.phase === 'error' && (
        <p className="error" role="alert">
          {collections.error}
        </p>
      )}
      {collections.phase === 'ready' && collections.items.length === 0 && (
        <p className="hint" data-testid="no-collections">
          {canUpload
            ? 'No collections yet. Upload a PDF on the Upload page to create one.'
            : 'No collections you can read yet. Ask an admin for access.'}
        </p>
      )}
      {collections.items.length > 0 && (
        <ul className="collection-list" aria-labelledby="collections-heading" data-testid="collections">
          {collections.items.map((c) => (
            <li key={c.name}>
              <button
                type="button"
                className={selected === c.name ? 'collection active' : 'collection'}
                aria-pressed={selected === c.name}
                onClick={() => select(c.name)}
              >
                {c.name} <span className="count">({countOf(c.documents, 'document')})</span>
              </button>
            </li>
          ))}
        </ul>
      )}

      {selected && (
        <>
          <h3 id="documents-heading">Documents in “{selected}”</h3>
          {!writable && (
            <p className="hint" data-testid="read-only">
              Read only: you may list the documents in “{selected}” but not delete them.
            </p>
          )}

          {confirming && writable && (
            <ConfirmBox
              title={`Delete ${confirming.filename}?`}
              confirmLabel={deleting ? 'Deleting…' : 'Delete permanently'}
              busy={deleting}
              onConfirm={confirmDelete}
              onCancel={cancelDelete}
              cancelRef={cancelRef}
            >
              This permanently erases {confirming.filename} from “{selected}”: its indexed chunks, every stored
              version of the file, and the excerpts of it kept in question history. It cannot be undone.
            </ConfirmBox>
          )}

          {shown.phase === 'error' && (
            <p className="error" role="alert">
              {shown.error}
            </p>
          )}
          {shown.phase === 'ready' && shown.items.length === 0 && (
            <p className="hint" data-testid="no-documents">
              No documents in “{selected}”.
            </p>
          )}
          {shown.items.length > 0 && (
            <table className="documents" aria-labelledby="documents-heading" aria-busy={shown.phase === 'loading'}>
              <thead>
                <tr>
                  <th scope="col">File</th>
                  <th scope="col">Size</th>
                  <th scope="col">Chunks</th>
                  <th scope="col">Uploaded</th>
                  <th scope="col">SHA-256</th>
                  {writable && (
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  )}
                </tr>
              </thead>
              <tbody>
                {shown.items.map((d) => (
                  <tr key={d.id}>
                    <td className="filename">{d.filename}</td>
                    <td>{formatBytes(d.size)}</td>
                    <td>{d.chunks ?? 'n/a'}</td>
                    <td>
                      <time dateTime={d.uploaded_at ?? undefined}>{formatDateTime(d.uploaded_at)}</time>
                    </td>
                    <td>
                      <code title={d.sha256}>{shortHash(d.sha256)}</code>
                    </td>
                    {writable && (
                      <td>
                        <button
                          type="button"
                          className="danger small"
                          aria-label={`Delete ${d.filename}`}
                          onClick={() => askToDelete(d)}
                          disabled={deleting}
                        >
                          Delete
                        </button>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}
