import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';

// The dashboard is built into web/dist and embedded into the voltrun binary by
// crates/voltrun-web. Everything is bundled: nothing is loaded from a CDN at run time.
export default defineConfig({
  plugins: [react()],
  resolve: {
    // Monaco's ESM tree by path, for the editor features (src/monaco-contrib.ts): the package's
    // export map only exposes .js files.
    alias: { 'monaco-esm': fileURLToPath(new URL('./node_modules/monaco-editor/esm/vs', import.meta.url)) },
  },
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    // Monaco is large by nature; it is only loaded on the pages that show an editor.
    chunkSizeWarningLimit: 4096,
    sourcemap: false,
  },
  worker: { format: 'es' },
  server: {
    // `npm run dev` against a local `voltrun serve` on the default port.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/health': 'http://127.0.0.1:8080',
    },
  },
});
