// Monaco, bundled: the editor core, the Python and JavaScript grammars and the JSON language
// (with its worker, for validation of invocation input). @monaco-editor/react is pointed at
// this instance so it never loads Monaco from a CDN.
import * as monaco from 'monaco-editor/editor/editor.api';
import './monaco-contrib';
import 'monaco-editor/languages/definitions/python/register';
import 'monaco-editor/languages/definitions/javascript/register';
import 'monaco-editor/languages/features/json/register';
import EditorWorker from 'monaco-editor/editor/editor.worker?worker';
import JsonWorker from 'monaco-editor/language/json/json.worker?worker';
import { loader } from '@monaco-editor/react';

self.MonacoEnvironment = {
  getWorker(_workerId: string, label: string) {
    return label === 'json' ? new JsonWorker() : new EditorWorker();
  },
};

loader.config({ monaco });

export { monaco };
