// Two versions' code side by side in Monaco's diff editor, read-only. Loaded lazily.
//
// @monaco-editor/react disposes the text models before the diff widget lets go of them when
// it unmounts ("TextModel got disposed before DiffEditorWidget model got reset"), so it is
// told to keep them, and they are disposed here once the widget is gone.
import { DiffEditor, type DiffOnMount } from '@monaco-editor/react';
import { useEffect, useRef } from 'react';
import '../monaco';

type Models = ReturnType<Parameters<DiffOnMount>[0]['getModel']>;

export default function CodeDiff({ original, modified, language, height, label }: { original: string; modified: string; language: string; height: number; label: string }) {
  const models = useRef<Models>(null);
  useEffect(
    () => () => {
      const m = models.current;
      setTimeout(() => {
        m?.original.dispose();
        m?.modified.dispose();
      }, 0);
    },
    [],
  );
  return (
    <div className="code-editor" data-testid="code-diff" aria-label={label}>
      <DiffEditor
        height={height}
        language={language}
        original={original}
        modified={modified}
        theme="vs"
        keepCurrentOriginalModel
        keepCurrentModifiedModel
        onMount={(editor) => {
          models.current = editor.getModel();
        }}
        loading={<div className="editor-loading">Loading editor…</div>}
        options={{ readOnly: true, originalEditable: false, renderSideBySide: true, minimap: { enabled: false }, fontSize: 13, scrollBeyondLastLine: false, automaticLayout: true }}
      />
    </div>
  );
}
