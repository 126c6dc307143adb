import { describe, expect, it } from 'vitest';
import { countOf, describeError, formatBytes, formatDateTime, shortHash } from './format.js';
import { ApiError } from '../api.js';

describe('format helpers', () => {
  it('formats byte sizes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(250 * 1024)).toBe('250 KiB');
    expect(formatBytes(5 * 1024 * 1024 + 1)).toBe('5.0 MiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.0 GiB');
    expect(formatBytes(null)).toBe('n/a');
    expect(formatBytes(-1)).toBe('n/a');
  });

  it('formats timestamps, keeping unparseable ones as given', () => {
    expect(formatDateTime('2026-01-02T03:04:05Z')).toBe(new Date('2026-01-02T03:04:05Z').toLocaleString());
    expect(formatDateTime('yesterday')).toBe('yesterday');
    expect(formatDateTime(null)).toBe('n/a');
  });

  it('shortens hashes and counts things', () => {
    expect(shortHash('a'.repeat(64))).toBe('aaaaaaaaaaaa');
    expect(shortHash(undefined)).toBe('');
    expect(countOf(1, 'chunk')).toBe('1 chunk');
    expect(countOf(0, 'chunk')).toBe('0 chunks');
    expect(countOf(2, 'entry', 'entries')).toBe('2 entries');
  });

  it('describes errors with and without an HTTP status', () => {
    expect(describeError('Delete', new ApiError('Document not found', 404))).toBe(
      'Delete failed (HTTP 404): Document not found',
    );
    expect(describeError('Delete', new ApiError('Network error: x', 0))).toBe('Delete failed: Network error: x');
  });
});
