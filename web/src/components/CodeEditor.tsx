// The Monaco editor as a form control. Loaded lazily: Monaco is most of the bundle.
import Editor, { type OnMount } from '@monaco-editor/react';
import { useEffect, useRef } from 'react';
import { monaco } from '../monaco';

export interface CodeEditorProps {
  value: string;
  onChange: (v: string) => void;
  /** Monaco's language id: python, javascript, json, or plaintext for any other file. */
  language: 'python' | 'javascript' | 'json' | 'plaintext';
  /** A test id other than `editor-<language>`. */
  testId?: string;
  height: number | string;
  label: string;
  id?: string;
  /** Ctrl/Cmd+Enter. */
  onSubmit?: () => void;
  invalid?: boolean;
  describedBy?: string;
  /** Shown, not edited (a stored version's code). */
  readOnly?: boolean;
}

export default function CodeEditor(p: CodeEditorProps) {
  const submit = useRef(p.onSubmit);
  submit.current = p.onSubmit;
  const editorRef = useRef<Parameters<OnMount>[0] | null>(null);
  // The editor owns its text; `value` is pushed into it only when it changes from outside
  // (e.g. a template swap). A value the editor itself emitted a moment ago is not "outside":
  // React renders after a few keystrokes, and writing a stale value back would lose them.
  const emitted = useRef<string[]>([p.value]);
  useEffect(() => {
    const ed = editorRef.current;
    if (!ed || emitted.current.includes(p.value) || ed.getValue() === p.value) return;
    emitted.current = [p.value];
    ed.setValue(p.value);
  }, [p.value]);
  const change = (v: string | undefined) => {
    const text = v ?? '';
    emitted.current = [...emitted.current.slice(-15), text];
    p.onChange(text);
  };
  const mount: OnMount = (editor) => {
    editorRef.current = editor;
    editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.Enter, () => submit.current?.());
    const ta = editor.getDomNode()?.querySelector('textarea');
    if (ta) {
      if (p.id) ta.id = p.id;
      if (p.describedBy) ta.setAttribute('aria-describedby', p.describedBy);
    }
  };
  return (
    <div className={`code-editor${p.invalid ? ' invalid' : ''}`} data-testid={p.testId ?? `editor-${p.language}`} data-language={p.language}>
      <Editor
        height={p.height}
        language={p.language}
        defaultValue={p.value}
        onChange={change}
        onMount={mount}
        theme="vs"
        loading={<div className="editor-loading">Loading editor…</div>}
        options={{
          ariaLabel: p.label,
          readOnly: p.readOnly ?? false,
          minimap: { enabled: false },
          fontSize: 13,
          lineNumbersMinChars: 3,
          scrollBeyondLastLine: false,
          automaticLayout: true,
          tabSize: p.language === 'python' ? 4 : 2,
          renderLineHighlight: 'line',
          overviewRulerLanes: 0,
          hideCursorInOverviewRuler: true,
          overviewRulerBorder: false,
          wordWrap: p.language === 'json' ? 'on' : 'off',
          fixedOverflowWidgets: true,
          padding: { top: 8, bottom: 8 },
        }}
      />
    </div>
  );
}
