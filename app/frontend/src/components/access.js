// What the logged-in user may do, from GET /auth/me (docs/access-control.md, "Roles and grants").
// The server enforces all of it; the UI only avoids offering what it would refuse.

/**
 * {isAdmin, role, readable, writable, canRead(c), canWrite(c)}. `readable`/`writable` are the
 * granted collection names (sorted); an admin reads and writes every collection without grants.
 * Only an editor (or admin) writes: a viewer's `write` grant (which the server refuses) counts as read.
 */
export function accessFor(me) {
  const role = me?.role ?? null;
  const isAdmin = role === 'admin';
  const grants = Array.isArray(me?.grants) ? me.grants : [];
  const names = (list) => [...new Set(list.map((g) => g?.collection).filter(Boolean))].sort();
  const readable = names(grants);
  const writable = role === 'editor' ? names(grants.filter((g) => g?.permission === 'write')) : [];
  return {
    role,
    isAdmin,
    readable,
    writable,
    canRead: (c) => isAdmin || readable.includes(c),
    canWrite: (c) => isAdmin || writable.includes(c),
    canUpload: isAdmin || writable.length > 0,
  };
}

/** The value to use from `options` (null: free text): the current one if offered, else the first. */
export function pickFrom(options, value) {
  if (!Array.isArray(options)) return value;
  return options.includes(value) ? value : (options[0] ?? '');
}
