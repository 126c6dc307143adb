import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Dev-only proxy for `npm run dev`: the production app is served by nginx,
// which forwards /api to the backend. Point the dev server at a local backend with
//   VITE_DEV_API_TARGET=http://127.0.0.1:8000 npm run dev
// and set VITE_DEV_API_STRIP=1 if the backend serves its routes without the /api prefix.
const apiTarget = process.env.VITE_DEV_API_TARGET || 'http://127.0.0.1:8000';
const stripApiPrefix = process.env.VITE_DEV_API_STRIP === '1';

export default defineConfig({
  plugins: [react()],
  base: '/',
  server: {
    proxy: {
      '/api': {
        target: apiTarget,
        changeOrigin: true,
        ...(stripApiPrefix ? { rewrite: (path) => path.replace(/^\/api/, '') } : {}),
      },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    // Vite's default output puts content-hashed files under dist/assets/
    // (nginx serves /assets/ with a long immutable cache, index.html with no-cache).
    assetsDir: 'assets',
  },
  test: {
    environment: 'jsdom',
    globals: false,
    setupFiles: ['./src/test/setup.js'],
    include: ['src/**/*.test.{js,jsx}'],
    restoreMocks: true,
  },
});
