import { afterEach, vi } from 'vitest';
import { cleanup } from '@testing-library/react';
import { setCsrfToken } from '../api.js';

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(async () => {
  cleanup();
  vi.unstubAllGlobals();
  setCsrfToken(null);
  // jsdom applies a clicked link's #hash, and fires hashchange, in later tasks. Let both happen
  // here rather than inside the next test, where they would switch a freshly rendered App to
  // another page (remounting the page under test and re-running its fetches).
  await nextTask();
  window.location.hash = '';
  await nextTask();
  // Undo mockClipboard() (an own property shadowing whatever jsdom provides).
  if (Object.prototype.hasOwnProperty.call(window.navigator, 'clipboard')) delete window.navigator.clipboard;
});
