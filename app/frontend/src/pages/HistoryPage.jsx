import { useCallback, useEffect, useId, useRef, useState } from 'react';
import { listHistory } from '../api.js';
import CopyButton from '../components/CopyButton.jsx';
import SourceList from '../components/SourceList.jsx';
import { countOf, describeError, formatDateTime } from '../components/format.js';

export const PAGE_SIZE = 50;

function HistoryEntry({ entry }) {
  const [open, setOpen] = useState(false);
  const answerId = useId();
  const sourcesId = useId();
  const sources = Array.isArray(entry.sources) ? entry.sources : [];
  const answer = typeof entry.answer === 'string' ? entry.answer : JSON.stringify(entry.answer, null, 2);

  return (
    <li className="history-entry" data-testid="history-entry">
      <p className="history-question">{entry.question}</p>
      <div className="history-meta">
        <span className="history-collection">{entry.collection}</span>
        {' · '}
        <span className="history-latency">{entry.latency_ms ?? 'n/a'} ms</span>
        {' · '}
        <time dateTime={entry.created_at ?? undefined}>{formatDateTime(entry.created_at)}</time>
      </div>
      <button
        type="button"
        className="secondary small"
        aria-expanded={open}
        aria-controls={answerId}
        onClick={() => setOpen((o) => !o)}
      >
        {open ? 'Hide answer' : `Show answer (${countOf(sources.length, 'source')})`}
      </button>
      {open && (
        <div id={answerId} className="history-answer">
          <div className="sql-heading">
            <h4>SQL</h4>
            <CopyButton text={answer} />
          </div>
          <pre className="sql" data-testid="history-sql">
            <code>{answer}</code>
          </pre>
          <h4 id={sourcesId}>Sources</h4>
          <SourceList sources={sources} labelledBy={sourcesId} testId="history-sources" />
        </div>
      )}
    </li>
  );
}

export default function HistoryPage() {
  const [filterText, setFilterText] = useState('');
  const [filter, setFilter] = useState('');
  const [entries, setEntries] = useState([]);
  const [nextBefore, setNextBefore] = useState(null);
  const [state, setState] = useState({ phase: 'loading' });
  const controller = useRef(null);
  const filterId = useId();

  const load = useCallback(async ({ collection, before } = {}) => {
    controller.current?.abort();
    const own = new AbortController();
    controller.current = own;
    const more = before != null;
    setState({ phase: more ? 'loading-more' : 'loading' });
    if (!more) {
      setEntries([]);
      setNextBefore(null);
    }
    try {
      const data = await listHistory({ limit: PAGE_SIZE, before, collection, signal: own.signal });
      const page = Array.isArray(data.entries) ? data.entries : [];
      setEntries((prev) => {
        if (!more) return page;
        const seen = new Set(prev.map((e) => e.id));
        return [...prev, ...page.filter((e) => !seen.has(e.id))];
      });
      setNextBefore(data.next_before ?? null);
      setState({ phase: 'ready' });
    } catch (err) {
      if (err?.name === 'AbortError') return;
      setState({ phase: 'error', message: describeError(more ? 'Loading more history' : 'Loading history', err) });
    }
  }, []);

  useEffect(() => {
    load({ collection: filter });
    return () => controller.current?.abort();
  }, [filter, load]);

  function onSubmit(event) {
    event.preventDefault();
    const value = filterText.trim();
    if (value === filter) load({ collection: value });
    else setFilter(value);
  }

  const busy = state.phase === 'loading' || state.phase === 'loading-more';
  let statusText = '';
  if (state.phase === 'loading') statusText = 'Loading history…';
  else if (state.phase === 'loading-more') statusText = 'Loading more…';
  else if (state.phase === 'error') statusText = state.message;
  else if (entries.length > 0) {
    statusText = `Showing ${countOf(entries.length, 'question')}${nextBefore == null ? '' : '; older ones can be loaded'}.`;
  }

  return (
    <section className="page">
      <h2 id="history-heading">History</h2>
      <p className="hint">Questions asked so far, newest first, with the SQL answer and its sources.</p>

      <form className="filter" onSubmit={onSubmit} noValidate>
        <div className="field">
          <label htmlFor={filterId}>Only collection (blank for all)</label>
          <input
            id={filterId}
            type="text"
            value={filterText}
            onChange={(e) => setFilterText(e.target.value)}
            autoComplete="off"
            spellCheck={false}
          />
        </div>
        <button type="submit" disabled={busy}>
          Show
        </button>
      </form>

      <div role="status" aria-live="polite" className="status">
        {statusText && <span className={state.phase === 'error' ? 'error' : undefined}>{statusText}</span>}
      </div>

      {state.phase === 'ready' && entries.length === 0 && (
        <p className="hint" data-testid="no-history">
          {filter ? `No questions asked in “${filter}” yet.` : 'No questions asked yet.'}
        </p>
      )}

      {entries.length > 0 && (
        <ol className="history" aria-labelledby="history-heading" data-testid="history">
          {entries.map((entry) => (
            <HistoryEntry key={entry.id} entry={entry} />
          ))}
        </ol>
      )}

      {nextBefore != null && entries.length > 0 && (
        <button type="button" onClick={() => load({ collection: filter, before: nextBefore })} disabled={busy}>
          {state.phase === 'loading-more' ? 'Loading…' : 'Load more'}
        </button>
      )}
    </section>
  );
}
