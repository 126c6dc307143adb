// Small display helpers shared by the Documents and History pages.

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB"; bytes below 1 KiB stay exact ("512 B"). */
export function formatBytes(bytes) {
  const n = Number(bytes);
  if (bytes == null || bytes === '' || !Number.isFinite(n) || n < 0) return 'n/a';
  if (n < 1024) return `${n} B`;
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < UNITS.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

/** An ISO 8601 timestamp in the user's locale; the raw value when it does not parse. */
export function formatDateTime(iso) {
  if (!iso) return 'n/a';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** First 12 hex digits of a SHA-256, enough to tell documents apart at a glance. */
export function shortHash(sha256) {
  const s = String(sha256 ?? '');
  return s.length > 12 ? s.slice(0, 12) : s;
}

/** "1 chunk", "3 chunks"; `plural` for irregular words ("entry" -> "entries"). */
export function countOf(n, singular, plural = `${singular}s`) {
  const k = Number(n ?? 0);
  return `${k} ${k === 1 ? singular : plural}`;
}

/** Error text for the pages: "<what> failed (HTTP 404): reason", or without status for network errors. */
export function describeError(what, err) {
  const reason = err?.message || 'Unknown error';
  return err?.status ? `${what} failed (HTTP ${err.status}): ${reason}` : `${what} failed: ${reason}`;
}
