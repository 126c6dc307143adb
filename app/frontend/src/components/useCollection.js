import { useState } from 'react';
import { DEFAULT_COLLECTION } from '../api.js';

// Pages share the collection name through App when it passes `collection`/`onCollectionChange`;
// rendered on their own (e.g. in unit tests) they keep it locally, defaulting to "querygpt".
export function useCollection(collection, onCollectionChange) {
  const [local, setLocal] = useState(DEFAULT_COLLECTION);
  if (collection !== undefined && onCollectionChange) return [collection, onCollectionChange];
  return [local, setLocal];
}
