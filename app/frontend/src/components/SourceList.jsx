// The sources an answer was generated from (Chat page, History page).

const EXCERPT_LIMIT = 400;

export function excerpt(text) {
  const clean = String(text ?? '').replace(/\s+/g, ' ').trim();
  return clean.length > EXCERPT_LIMIT ? `${clean.slice(0, EXCERPT_LIMIT).trimEnd()}…` : clean;
}

export function formatScore(score) {
  if (typeof score === 'number' && Number.isFinite(score)) return score.toFixed(3);
  return score == null ? 'n/a' : String(score);
}

export default function SourceList({ sources, labelledBy, testId = 'sources' }) {
  if (!sources?.length) {
    return (
      <p className="hint" data-testid={testId}>
        No sources were returned.
      </p>
    );
  }
  return (
    <ol data-testid={testId} aria-labelledby={labelledBy} className="sources">
      {sources.map((s, i) => (
        <li key={`${s.filename}-${s.page}-${s.chunk}-${i}`} className="source">
          <div className="source-meta">
            <span className="source-file">{s.filename ?? 'unknown file'}</span>
            {' · '}
            <span className="source-page">page {s.page ?? 'n/a'}</span>
            {' · '}
            <span className="source-score">score {formatScore(s.score)}</span>
          </div>
          <blockquote className="source-text">{excerpt(s.text)}</blockquote>
        </li>
      ))}
    </ol>
  );
}
