// The Monaco editor as a form control. Loaded lazily: Monaco is most of the bundle.
import Editor, { type OnMount } from '@monaco-editor/react';
import { useRef } from 'react';
import { monaco } from '../monaco';

export interface CodeEditorProps {
  value: string;
  onChange: (v: string) => void;
  language: 'python' | 'javascript' | 'json';
  height: number | string;
  label: string;
  id?: string;
  /** Ctrl/Cmd+Enter. */
  onSubmit?: () => void;
  invalid?: boolean;
  describedBy?: string;
}

export default function CodeEditor(p: CodeEditorProps) {
  const submit = useRef(p.onSubmit);
  submit.current = p.onSubmit;
  const mount: OnMount = (editor) => {
    editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.Enter, () => submit.current?.());
    const ta = editor.getDomNode()?.querySelector('textarea');
    if (ta) {
      if (p.id) ta.id = p.id;
      if (p.describedBy) ta.setAttribute('aria-describedby', p.describedBy);
    }
  };
  return (
    <div className={`code-editor${p.invalid ? ' invalid' : ''}`} data-testid={`editor-${p.language}`} data-language={p.language}>
      <Editor
        height={p.height}
        language={p.language}
        value={p.value}
        onChange={(v) => p.onChange(v ?? '')}
        onMount={mount}
        theme="vs"
        loading={<div className="editor-loading">Loading editor…</div>}
        options={{
          ariaLabel: p.label,
          minimap: { enabled: false },
          fontSize: 13,
          lineNumbersMinChars: 3,
          scrollBeyondLastLine: false,
          automaticLayout: true,
          tabSize: p.language === 'python' ? 4 : 2,
          renderLineHighlight: 'line',
          wordWrap: p.language === 'json' ? 'on' : 'off',
          fixedOverflowWidgets: true,
          padding: { top: 8, bottom: 8 },
        }}
      />
    </div>
  );
}
