import { afterEach, vi } from 'vitest';
import { cleanup } from '@testing-library/react';

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  window.location.hash = '';
  // Undo mockClipboard() (an own property shadowing whatever jsdom provides).
  if (Object.prototype.hasOwnProperty.call(window.navigator, 'clipboard')) delete window.navigator.clipboard;
});
