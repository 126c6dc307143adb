import { useEffect, useId, useRef, useState } from 'react';
import { askQuestion } from '../api.js';
import { useCollection } from '../components/useCollection.js';
import { pickFrom } from '../components/access.js';
import CollectionField from '../components/CollectionField.jsx';
import CopyButton from '../components/CopyButton.jsx';
import SourceList from '../components/SourceList.jsx';

function describeError(err) {
  const reason = err?.message || 'Unknown error';
  return err?.status ? `Query failed (HTTP ${err.status}): ${reason}` : `Query failed: ${reason}`;
}

// `collections`: the collections the user may read (a choice), or null for free text (admin).
export default function ChatPage({ collection, onCollectionChange, collections = null }) {
  const [chosenCollection, setCollectionName] = useCollection(collection, onCollectionChange);
  const collectionName = pickFrom(collections, chosenCollection);
  const noChoice = Array.isArray(collections) && collections.length === 0;
  // Offered a choice that excludes the shared name: the first offered becomes the shared one.
  useEffect(() => {
    if (collectionName && collectionName !== chosenCollection) setCollectionName(collectionName);
  }, [collectionName, chosenCollection, setCollectionName]);
  const [question, setQuestion] = useState('');
  const [state, setState] = useState({ phase: 'idle' });
  const inFlight = useRef(false);
  const questionId = useId();
  const busy = state.phase === 'asking';

  async function ask() {
    if (inFlight.current) return;
    const q = question.trim();
    if (!q) {
      setState({ phase: 'error', message: 'Type a question first.' });
      return;
    }
    if (noChoice) {
      setState({ phase: 'error', message: 'You cannot read any collection yet.' });
      return;
    }
    inFlight.current = true;
    setState({ phase: 'asking', question: q });
    try {
      const data = await askQuestion(q, collectionName);
      setState({
        phase: 'answered',
        question: q,
        result: typeof data.result === 'string' ? data.result : JSON.stringify(data.result, null, 2),
        sources: Array.isArray(data.sources) ? data.sources : [],
      });
    } catch (err) {
      setState({ phase: 'error', message: describeError(err) });
    } finally {
      inFlight.current = false;
    }
  }

  function onSubmit(event) {
    event.preventDefault();
    ask();
  }

  function onKeyDown(event) {
    // Ctrl+Enter / Cmd+Enter submits; plain Enter inserts a newline.
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      ask();
    }
  }

  return (
    <section className="page">
      <h2 id="chat-heading">Ask a question</h2>
      <form onSubmit={onSubmit} noValidate>
        <CollectionField
          value={collectionName}
          onChange={setCollectionName}
          options={collections}
          emptyHint="You hold read access to no collection; ask an admin for it."
        />
        <div className="field">
          <label htmlFor={questionId}>Question</label>
          <textarea
            id={questionId}
            name="query"
            rows={4}
            value={question}
            onChange={(e) => setQuestion(e.target.value)}
            onKeyDown={onKeyDown}
            placeholder="e.g. List the ten customers with the highest total order value"
          />
        </div>
        <button type="submit" disabled={busy || noChoice}>
          {busy ? 'Asking…' : 'Ask'}
        </button>
      </form>

      <div role="status" aria-live="polite" className={`status status-${state.phase}`}>
        {state.phase === 'asking' && <span>Generating SQL…</span>}
        {state.phase === 'answered' && (
          <span>
            Answer ready ({state.sources.length} source{state.sources.length === 1 ? '' : 's'}).
          </span>
        )}
        {state.phase === 'error' && <span className="error">{state.message}</span>}
      </div>

      {state.phase === 'answered' && (
        <>
          <div className="sql-heading">
            <h3>SQL</h3>
            <CopyButton text={state.result} />
          </div>
          <pre data-testid="sql-result" className="sql">
            <code>{state.result}</code>
          </pre>

          <h3 id="sources-heading">Sources</h3>
          <SourceList sources={state.sources} labelledBy="sources-heading" />
        </>
      )}
    </section>
  );
}
