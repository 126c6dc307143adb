import { useEffect, useRef, useState } from 'react';

const FEEDBACK_MS = 2500;

/**
 * A "Copy" button for a block of text (the generated SQL). Uses navigator.clipboard.writeText;
 * when that API is missing (older browsers, or a non-HTTPS origin) or the write is refused,
 * it says so and asks the user to select and copy the text by hand.
 */
export default function CopyButton({ text, label = 'Copy SQL' }) {
  const [feedback, setFeedback] = useState(null);
  const timer = useRef(null);

  useEffect(() => () => clearTimeout(timer.current), []);

  function show(kind, message, { fade = false } = {}) {
    clearTimeout(timer.current);
    setFeedback({ kind, message });
    if (fade) timer.current = setTimeout(() => setFeedback(null), FEEDBACK_MS);
  }

  async function onClick() {
    const clipboard = typeof navigator !== 'undefined' ? navigator.clipboard : undefined;
    if (!clipboard || typeof clipboard.writeText !== 'function') {
      show('error', 'Copying is not available here (it needs HTTPS and a recent browser); select the text and copy it by hand.');
      return;
    }
    try {
      await clipboard.writeText(String(text ?? ''));
      show('ok', 'Copied', { fade: true });
    } catch (err) {
      const why = err?.message ? ` (${err.message})` : '';
      show('error', `Could not copy${why}; select the text and copy it by hand.`);
    }
  }

  return (
    <span className="copy">
      <button type="button" className="secondary" aria-label={label} onClick={onClick}>
        Copy
      </button>
      <span aria-live="polite" className={feedback ? `copy-feedback copy-${feedback.kind}` : 'copy-feedback'}>
        {feedback?.message ?? ''}
      </span>
    </span>
  );
}
