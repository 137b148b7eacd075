// Two versions' code side by side in Monaco's diff editor, read-only. Loaded lazily.
import { DiffEditor } from '@monaco-editor/react';
import '../monaco';

export default function CodeDiff({ original, modified, language, height, label }: { original: string; modified: string; language: string; height: number; label: string }) {
  return (
    <div className="code-editor" data-testid="code-diff" aria-label={label}>
      <DiffEditor
        height={height}
        language={language}
        original={original}
        modified={modified}
        theme="vs"
        loading={<div className="editor-loading">Loading editor…</div>}
        options={{ readOnly: true, originalEditable: false, renderSideBySide: true, minimap: { enabled: false }, fontSize: 13, scrollBeyondLastLine: false, automaticLayout: true }}
      />
    </div>
  );
}
