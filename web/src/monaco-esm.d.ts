// Side-effect imports of Monaco's ESM files by path (aliased in vite.config.ts).
declare module 'monaco-esm/*';
