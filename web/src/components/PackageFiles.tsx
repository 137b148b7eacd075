// A package's files: a folder tree beside Monaco. Text files open in the editor; binary files
// (and very large ones) are listed with their size but never opened. When `onChange` is given
// the files can be edited, added, renamed and deleted; the parent decides what saving means
// (a `files` body on create, a re-zipped `zip` on the function page).
//
// Names come from an uploaded archive and are untrusted: they are rendered as React text
// nodes only (escaped), and used as keys and data attributes, never as markup or a model URI.
import { lazy, Suspense, useEffect, useMemo, useState, type FormEvent } from 'react';
import { fileOfText, languageOf, MAX_EDIT, pathProblem, sizeText as bytes, treeOf, type FileMap, type TreeDir } from '../packages';
import { ConfirmButton } from './ui';

const CodeEditor = lazy(() => import('./CodeEditor'));

export interface PackageFilesProps {
  files: FileMap;
  /** Edits; without it the tree is read-only. */
  onChange?: (files: FileMap) => void;
  /** Paths changed since the last save (marked in the tree). */
  dirty?: Set<string>;
  /** The file to open first (e.g. the handler's module). */
  initial?: string;
  height?: number;
  /** Ctrl/Cmd+Enter in the editor. */
  onSubmit?: () => void;
  /**
   * Bumped by the parent when it replaces the files from outside (a reload from the server,
   * discarded edits): the open editor is made anew with the new text.
   */
  revision?: number;
}

export function PackageFiles({ files, onChange, dirty, initial, height = 380, onSubmit, revision = 0 }: PackageFilesProps) {
  const paths = useMemo(() => [...files.keys()], [files]);
  const firstText = () => (initial && files.has(initial) ? initial : (paths.find((p) => files.get(p)?.text !== null) ?? paths[0] ?? null));
  const [open, setOpen] = useState<string | null>(firstText);
  const [adding, setAdding] = useState(false);
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const editable = !!onChange;

  // The open file went away (deleted, or a new package): open another.
  useEffect(() => {
    if (open === null || !files.has(open)) setOpen(firstText());
  }, [files]);

  const tree = useMemo(() => treeOf(paths), [paths]);
  const file = open ? files.get(open) : undefined;

  const startAdd = () => {
    const dir = open && open.includes('/') ? open.slice(0, open.lastIndexOf('/') + 1) : '';
    setName(dir);
    setProblem(null);
    setRenaming(false);
    setAdding(true);
  };
  const startRename = () => {
    if (!open) return;
    setName(open);
    setProblem(null);
    setAdding(false);
    setRenaming(true);
  };
  const cancel = () => {
    setAdding(false);
    setRenaming(false);
    setProblem(null);
  };
  const submitName = (e: FormEvent) => {
    e.preventDefault();
    e.stopPropagation();
    if (!onChange) return;
    const path = name.trim();
    const why = pathProblem(path);
    if (why) return setProblem(why);
    if (renaming && path === open) return cancel();
    if (files.has(path)) return setProblem(`${path} already exists`);
    for (const p of files.keys()) {
      if (p.startsWith(path + '/')) return setProblem(`${path} is a folder`);
      if (path.startsWith(p + '/')) return setProblem(`${p} is a file, not a folder`);
    }
    const next: FileMap = new Map();
    if (adding) {
      for (const [p, f] of files) next.set(p, f);
      next.set(path, fileOfText(''));
    } else if (open) {
      // Keep the order of the map; the renamed file takes the old one's place.
      for (const [p, f] of files) next.set(p === open ? path : p, f);
    }
    onChange(next);
    setOpen(path);
    cancel();
  };
  const remove = () => {
    if (!onChange || !open) return;
    const next: FileMap = new Map(files);
    next.delete(open);
    onChange(next);
    setOpen(null);
  };
  const edit = (text: string) => {
    if (!onChange || !open) return;
    const next: FileMap = new Map(files);
    next.set(open, fileOfText(text));
    onChange(next);
  };

  return (
    <div className="pkg" data-testid="package-files">
      <div className="pkg-side">
        <div className="pkg-tools">
          <span className="muted small" data-testid="package-count">
            {files.size} file{files.size === 1 ? '' : 's'}
          </span>
          {editable && (
            <span className="pkg-buttons">
              <button type="button" className="btn btn-small" onClick={startAdd}>
                New file
              </button>
              {open && (
                <button type="button" className="btn btn-small" onClick={startRename}>
                  Rename
                </button>
              )}
              {open && <ConfirmButton small label="Delete" confirmLabel="Delete file" onConfirm={remove} />}
            </span>
          )}
        </div>
        {(adding || renaming) && (
          // Not a nested <form>: this sits inside the function form.
          <div className="pkg-name" role="group" aria-label={adding ? 'New file' : 'Rename file'}>
            <label htmlFor="pkg-name" className="sr-only">
              {adding ? 'New file path' : 'New path'}
            </label>
            <input
              id="pkg-name"
              value={name}
              autoFocus
              spellCheck={false}
              autoComplete="off"
              placeholder="path/to/file.py"
              onChange={(e) => {
                setName(e.target.value);
                setProblem(null);
              }}
              onKeyDown={(e) => {
                if (e.key === 'Enter') submitName(e);
                if (e.key === 'Escape') cancel();
              }}
              aria-invalid={problem ? true : undefined}
              aria-describedby={problem ? 'pkg-name-err' : undefined}
            />
            <button type="button" className="btn btn-small btn-primary" onClick={submitName}>
              {adding ? 'Add' : 'Rename'}
            </button>
            <button type="button" className="btn btn-small" onClick={cancel}>
              Cancel
            </button>
            {problem && (
              <div id="pkg-name-err" className="field-error">
                {problem}
              </div>
            )}
          </div>
        )}
        <div className="pkg-tree" role="tree" aria-label="Package files" data-testid="package-tree">
          {files.size === 0 ? <div className="muted small pkg-empty">No files.</div> : <Dir dir={tree} depth={0} open={open} onOpen={setOpen} files={files} dirty={dirty} />}
        </div>
      </div>
      <div className="pkg-main">
        {open && file ? (
          <>
            <div className="pkg-path">
              <code data-testid="open-path">{open}</code>
              <span className="muted small">{bytes(file.bytes.length)}</span>
            </div>
            {file.text === null ? (
              <div className="pkg-binary muted" data-testid="binary-file">
                A binary file ({bytes(file.bytes.length)}): listed, not opened. It is kept as it is when the package is saved.
              </div>
            ) : file.bytes.length > MAX_EDIT ? (
              <div className="pkg-binary muted" data-testid="large-file">
                {bytes(file.bytes.length)} of text: too large to open here. It is kept as it is when the package is saved.
              </div>
            ) : (
              <Suspense fallback={<div className="editor-loading" style={{ height }}>Loading editor…</div>}>
                {/* One editor per file (and per outside revision): its undo history never mixes files. */}
                <CodeEditor
                  key={`${revision}:${open}`}
                  testId="file-editor"
                  label={`File ${open}`}
                  language={languageOf(open)}
                  value={file.text}
                  onChange={editable ? edit : () => {}}
                  height={height}
                  onSubmit={onSubmit}
                />
              </Suspense>
            )}
          </>
        ) : (
          <div className="pkg-binary muted">{files.size ? 'Pick a file to open it.' : editable ? 'Add a file to start.' : ''}</div>
        )}
      </div>
    </div>
  );
}

function Dir({ dir, depth, open, onOpen, files, dirty }: { dir: TreeDir; depth: number; open: string | null; onOpen: (p: string) => void; files: FileMap; dirty?: Set<string> }) {
  return (
    <ul className="tree-list" role={depth === 0 ? 'none' : 'group'}>
      {dir.dirs.map((d) => (
        <li key={'d:' + d.path} role="treeitem" aria-expanded="true" className="tree-dir" data-testid="tree-dir" data-path={d.path}>
          <span className="tree-label" style={{ paddingLeft: depth * 14 + 6 }}>
            <span aria-hidden="true">▾ </span>
            {d.name}/
          </span>
          <Dir dir={d} depth={depth + 1} open={open} onOpen={onOpen} files={files} dirty={dirty} />
        </li>
      ))}
      {dir.files.map((f) => {
        const entry = files.get(f.path);
        const binary = entry?.text === null;
        return (
          <li key={'f:' + f.path} role="treeitem" aria-selected={open === f.path} className="tree-file-item">
            <button
              type="button"
              className={`tree-file${open === f.path ? ' active' : ''}${binary ? ' binary' : ''}`}
              style={{ paddingLeft: depth * 14 + 6 }}
              onClick={() => onOpen(f.path)}
              data-testid="tree-file"
              data-path={f.path}
              data-binary={binary ? 'true' : undefined}
              title={f.path}
            >
              <span className="tree-name">{f.name}</span>
              {binary && <span className="tree-tag">bin</span>}
              {dirty?.has(f.path) && (
                <span className="tree-dirty" aria-label="changed" title="Changed">
                  ●
                </span>
              )}
            </button>
          </li>
        );
      })}
    </ul>
  );
}
