// Create or edit a function: the code in Monaco (Python or JavaScript highlighting by
// runtime), or a package (several files in a tree, or an uploaded zip), its layers and the
// configuration fields. Validation is the API's: its message is shown at the top and beside
// the field it names.
import { lazy, Suspense, useEffect, useRef, useState, type FormEvent } from 'react';
import { api, ApiError, get, type Fn, type Runtime, type RuntimeInfo } from '../api';
import { LayersPicker } from '../components/LayersPicker';
import { PackageFiles } from '../components/PackageFiles';
import { SecretsPicker } from '../components/SecretsPicker';
import { ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { asTextFiles, base64, fileOfText, handlerFile, MAX_FILES, MAX_UNPACKED, MAX_ZIP, mib, PackageProblem, readZipFile, unpack, type FileMap } from '../packages';
import { egressError, egressLines, MAX_EGRESS_ENTRIES } from '../egress';
import { runtimeLabel } from '../format';
import { Link, navigate } from '../router';
import { useToast } from '../toast';

const CodeEditor = lazy(() => import('../components/CodeEditor'));

/** The bootstrap of a new custom-runtime (`provided`) function: AWS's bash tutorial loop. */
const PROVIDED_BOOTSTRAP = `#!/bin/bash
# A custom runtime: this bootstrap speaks Lambda's Runtime API.
set -euo pipefail
API="http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -LD "$HEADERS" "$API/invocation/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -o /dev/null "$API/invocation/$ID/response" -d "{\\"echo\\": $EVENT}"
done
`;

const TEMPLATES: Record<Runtime, string> = {
  'python3.11': `def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"Hello from {context.function_name}")
    return {"greeting": f"Hello, {name}!"}
`,
  nodejs20: `exports.handler = async (event, context) => {
  const name = (event && event.name) || 'world';
  console.log(\`Hello from \${context.functionName}\`);
  return { greeting: \`Hello, \${name}!\` };
};
`,
  // A custom runtime takes packages only: the bootstrap is the package's first file.
  provided: PROVIDED_BOOTSTRAP,
};

/** The first file of a new multi-file package, per runtime. */
const PACKAGE_TEMPLATES: Record<Runtime, [string, string]> = {
  'python3.11': [
    'main.py',
    `def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"greeting": f"Hello, {name}!"}
`,
  ],
  nodejs20: [
    'index.js',
    `exports.handler = async (event) => {
  const name = (event && event.name) || 'world';
  return { greeting: \`Hello, \${name}!\` };
};
`,
  ],
  provided: ['bootstrap', PROVIDED_BOOTSTRAP],
};

/** Where the function's code comes from: one file, a tree of files, a zip, or (editing a package) as it is. */
type Source = 'code' | 'files' | 'zip' | 'keep';

const DEFAULT_HANDLERS = ['handler', 'main.handler', 'index.handler', 'function.handler'];

function defaultHandler(source: Source, runtime: Runtime): string {
  if (source === 'code') return 'handler';
  if (runtime === 'provided') return 'function.handler';
  return runtime === 'python3.11' ? 'main.handler' : 'index.handler';
}

function templateFiles(runtime: Runtime): FileMap {
  const [path, text] = PACKAGE_TEMPLATES[runtime];
  return new Map([[path, fileOfText(text)]]);
}

/** A picked zip: its bytes as they go up, and its files for the preview. */
interface PickedZip {
  name: string;
  bytes: Uint8Array;
  files: FileMap;
}

interface EnvRow {
  key: number;
  name: string;
  value: string;
}

interface FormState {
  name: string;
  description: string;
  runtime: Runtime;
  handler: string;
  code: string;
  memory: string;
  timeout: string;
  route: string;
  public: boolean;
  env: EnvRow[];
  /** The egress list, one entry per line. */
  egress: string;
  source: Source;
  files: FileMap;
  zip: PickedZip | null;
  /** `name:version`, in order. */
  layers: string[];
  /** Names of the caller's secrets the runs get as environment variables. */
  secrets: string[];
}

let envKey = 1;

function fromFn(f: Fn): FormState {
  return {
    name: f.name,
    description: f.description,
    runtime: f.runtime,
    handler: f.handler,
    code: f.code,
    memory: String(f.memory),
    timeout: String(f.timeout),
    route: f.route ?? '',
    public: f.public,
    env: Object.entries(f.env).map(([name, value]) => ({ key: envKey++, name, value })),
    egress: (f.egress ?? []).join('\n'),
    source: f.package ? 'keep' : 'code',
    files: templateFiles(f.runtime),
    zip: null,
    layers: f.layers ?? [],
    secrets: f.secrets ?? [],
  };
}

const EMPTY: FormState = {
  name: '',
  description: '',
  runtime: 'python3.11',
  handler: 'handler',
  code: TEMPLATES['python3.11'],
  memory: '128',
  timeout: '30',
  route: '',
  public: false,
  env: [],
  egress: '',
  source: 'code',
  files: templateFiles('python3.11'),
  zip: null,
  layers: [],
  secrets: [],
};

/** A number field's value: a number when it parses, else the text (so the API names the problem). */
function num(s: string): number | string | undefined {
  const t = s.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

export function FunctionForm({ id }: { id?: string }) {
  const editing = id !== undefined;
  const existing = useLoad((s) => (id ? get<Fn>(`/api/functions/${encodeURIComponent(id)}`, s) : Promise.resolve(undefined)), [id]);
  const runtimes = useLoad((s) => get<{ items: RuntimeInfo[] }>('/api/runtimes', s), []);
  usePageTitle(editing ? `Edit ${existing.data?.name ?? 'function'}` : 'New function');

  if (editing && existing.error) return <ErrorBox error={existing.error} retry={existing.reload} />;
  if (editing && !existing.data) return <Spinner label="Loading function…" />;
  return <Form key={id ?? 'new'} fn={existing.data} runtimes={runtimes.data?.items} />;
}

function Form({ fn, runtimes }: { fn?: Fn; runtimes?: RuntimeInfo[] }) {
  const toast = useToast();
  const [f, setF] = useState<FormState>(fn ? fromFn(fn) : EMPTY);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const errRef = useRef<HTMLDivElement>(null);
  const field = error instanceof ApiError ? error.field : null;
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setF((p) => ({ ...p, [k]: v }));

  useEffect(() => {
    if (!error) return;
    const target = field ? document.getElementById(`f-${field}`) : null;
    if (target) target.focus();
    else errRef.current?.scrollIntoView({ block: 'nearest' });
  }, [error, field]);

  const [zipError, setZipError] = useState<string | null>(null);

  const changeRuntime = (r: Runtime) => {
    setF((p) => {
      // Swap the template while the code is still an untouched template.
      const untouched = Object.values(TEMPLATES).includes(p.code) || p.code.trim() === '';
      const [tplPath, tplText] = PACKAGE_TEMPLATES[p.runtime];
      const filesUntouched = p.files.size === 1 && p.files.get(tplPath)?.text === tplText;
      return {
        ...p,
        runtime: r,
        code: !fn && untouched ? TEMPLATES[r] : p.code,
        files: filesUntouched ? templateFiles(r) : p.files,
        handler: DEFAULT_HANDLERS.includes(p.handler.trim()) ? defaultHandler(p.source, r) : p.handler,
      };
    });
  };

  const changeSource = (source: Source) => {
    setZipError(null);
    setF((p) => ({
      ...p,
      source,
      // An untouched default handler follows the kind of code (`handler` / `module.function`).
      handler: DEFAULT_HANDLERS.includes(p.handler.trim()) || p.handler.trim() === '' ? (source === 'keep' && fn ? fn.handler : defaultHandler(source, p.runtime)) : p.handler,
    }));
  };

  const pickZip = async (file: File | undefined) => {
    setZipError(null);
    set('zip', null);
    if (!file) return;
    try {
      const bytes = await readZipFile(file);
      const files = unpack(bytes);
      set('zip', { name: file.name, bytes, files });
    } catch (e) {
      setZipError(e instanceof Error ? e.message : String(e));
    }
  };

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    const env: Record<string, string> = {};
    for (const row of f.env) if (row.name.trim() || row.value) env[row.name.trim()] = row.value;
    const body: Record<string, unknown> = {
      name: f.name.trim(),
      description: f.description,
      runtime: f.runtime,
      handler: f.handler.trim() || defaultHandler(f.source, f.runtime),
      memory: num(f.memory),
      timeout: num(f.timeout),
      env,
      public: f.public,
      egress: egressLines(f.egress),
    };
    if (f.route.trim()) body.route = f.route.trim();
    else if (fn) body.route = null;
    // Layers go up when there are some, or when they changed (older servers know no `layers`).
    if (fn ? JSON.stringify(f.layers) !== JSON.stringify(fn.layers ?? []) : f.layers.length) body.layers = f.layers;
    if (fn ? JSON.stringify(f.secrets) !== JSON.stringify(fn.secrets ?? []) : f.secrets.length) body.secrets = f.secrets;
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    try {
      if (f.source === 'code') body.code = f.code;
      else if (f.source === 'files') {
        if (f.files.size > MAX_FILES) throw new PackageProblem('payload_too_large', `A package of files may have at most ${MAX_FILES} files; this one has ${f.files.size}. Upload a zip instead.`);
        body.files = asTextFiles(f.files);
      } else if (f.source === 'zip') {
        if (!f.zip) throw new PackageProblem('validation_failed', 'zip: pick a zip file to upload');
        body.zip = await base64(f.zip.bytes);
      }
    } catch (err) {
      setError(err instanceof PackageProblem ? new ApiError(400, err.code, err.message) : err);
      setBusy(false);
      return;
    }
    try {
      const saved = fn
        ? await api<Fn>('PUT', `/api/functions/${encodeURIComponent(fn.id)}`, { body })
        : await api<Fn>('POST', '/api/functions', { body });
      toast('success', fn ? `Saved ${saved.name} (version ${saved.version})` : `Created ${saved.name}`);
      navigate(`/functions/${saved.id}`);
    } catch (err) {
      setError(err);
      setBusy(false);
      // A validation message is shown beside its field; anything else also gets a toast.
      if (!(err instanceof ApiError && err.field)) toast('error', err instanceof Error ? err.message : String(err));
    }
  };

  const fieldErr = (name: string) =>
    field === name ? (
      <div id={`f-${name}-err`} className="field-error">
        {(error as ApiError).message}
      </div>
    ) : null;
  const invalid = (name: string) => ({
    'aria-invalid': field === name ? true : undefined,
    'aria-describedby': field === name ? `f-${name}-err` : undefined,
  });
  // The egress rules checked as you type, in the server's words; the server's own 400 (shown
  // the same way) is the last word.
  const egressClientError = egressError(egressLines(f.egress));
  const egressInvalid = field === 'egress' || egressClientError !== null;
  const language = f.runtime === 'python3.11' ? 'python' : 'javascript';
  const rtOptions: RuntimeInfo[] = runtimes ?? [
    { id: 'python3.11', language: 'python', version: '3.11', available: true },
    { id: 'nodejs20', language: 'javascript', version: '20', available: true },
  ];

  return (
    <form className="page fn-form" onSubmit={submit} noValidate>
      <div className="page-head">
        <div>
          <div className="crumbs">
            <Link href="/functions">Functions</Link>
            {fn && (
              <>
                {' / '}
                <Link href={`/functions/${fn.id}`}>{fn.name}</Link>
              </>
            )}
          </div>
          <h1>{fn ? `Edit ${fn.name}` : 'New function'}</h1>
        </div>
        <div className="actions">
          <Link href={fn ? `/functions/${fn.id}` : '/functions'} className="btn">
            Cancel
          </Link>
          <button type="submit" className="btn btn-primary" disabled={busy}>
            {busy ? 'Saving…' : fn ? 'Save changes' : 'Create function'}
          </button>
        </div>
      </div>

      <div ref={errRef}>
        <ErrorBox error={error} />
      </div>

      <div className="card">
        <div className="grid-3">
          <div className="field">
            <label htmlFor="f-name">Name</label>
            <input id="f-name" value={f.name} onChange={(e) => set('name', e.target.value)} placeholder="hello-world" autoComplete="off" spellCheck={false} autoFocus={!fn} {...invalid('name')} />
            {fieldErr('name') ?? <div className="hint">Lowercase letters, digits, _ and -.</div>}
          </div>
          <div className="field">
            <label htmlFor="f-runtime">Runtime</label>
            <select id="f-runtime" value={f.runtime} onChange={(e) => changeRuntime(e.target.value as Runtime)} {...invalid('runtime')}>
              {rtOptions.map((r) => (
                <option key={r.id} value={r.id}>
                  {runtimeLabel(r.id)}
                  {r.available ? '' : ' (not installed)'}
                </option>
              ))}
            </select>
            {fieldErr('runtime')}
          </div>
          <div className="field">
            <label htmlFor="f-handler">Handler</label>
            <input id="f-handler" value={f.handler} onChange={(e) => set('handler', e.target.value)} spellCheck={false} {...invalid('handler')} />
            {fieldErr('handler') ?? (
              <div className="hint">
                {f.source === 'code'
                  ? `The function ${language === 'python' ? 'defined in lambda_function.py' : 'exported by index.js'}.`
                  : `module.function: ${language === 'python' ? 'main.handler is handler in main.py' : 'index.handler is the handler export of index.js'}.`}
              </div>
            )}
          </div>
        </div>
        <fieldset className="source-pick" data-testid="source-pick">
          <legend className="label">Code</legend>
          {fn?.package && (
            <label className="check">
              <input type="radio" name="source" checked={f.source === 'keep'} onChange={() => changeSource('keep')} />
              Keep the package ({fn.package.file_count} files; edit them on the function page)
            </label>
          )}
          {!fn?.package && (
            <label className="check">
              <input type="radio" name="source" checked={f.source === 'code'} onChange={() => changeSource('code')} />
              One file
            </label>
          )}
          <label className="check">
            <input type="radio" name="source" checked={f.source === 'files'} onChange={() => changeSource('files')} />
            {fn?.package ? 'Replace with files' : 'Several files'}
          </label>
          <label className="check">
            <input type="radio" name="source" checked={f.source === 'zip'} onChange={() => changeSource('zip')} />
            {fn?.package ? 'Replace with a zip' : 'Upload a zip'}
          </label>
        </fieldset>
        {f.source === 'code' && (
          <div className="field">
            <label htmlFor="f-code" id="f-code-label">
              Code <span className="muted small">({language === 'python' ? 'lambda_function.py' : 'index.js'})</span>
            </label>
            <Suspense fallback={<div className="editor-loading" style={{ height: 340 }}>Loading editor…</div>}>
              <CodeEditor
                id="f-code"
                label={`Function code (${language})`}
                language={language}
                value={f.code}
                onChange={(v) => set('code', v)}
                height={340}
                onSubmit={() => void submit()}
                invalid={field === 'code'}
                describedBy="f-code-hint"
              />
            </Suspense>
            {fieldErr('code') ?? (
              <div id="f-code-hint" className="hint">
                Ctrl+Enter saves. Tab indents; Ctrl+M switches Tab to moving focus.
              </div>
            )}
          </div>
        )}
        {f.source === 'files' && (
          <div className="field" id="f-files" tabIndex={-1}>
            <PackageFiles files={f.files} onChange={(files) => set('files', files)} onSubmit={() => void submit()} height={340} />
            {fieldErr('files') ?? (
              <div className="hint">
                Text files, at most {MAX_FILES}. A requirements.txt (Python) or a package.json with dependencies (Node) at the root is installed at deploy time.
              </div>
            )}
          </div>
        )}
        {f.source === 'zip' && (
          <div className="field">
            <label htmlFor="f-zip">Package zip</label>
            <input
              id="f-zip"
              type="file"
              accept=".zip,application/zip"
              data-testid="zip-input"
              onChange={(e) => void pickZip(e.target.files?.[0])}
              aria-invalid={zipError || field === 'zip' ? true : undefined}
              aria-describedby={zipError || field === 'zip' ? 'f-zip-err' : 'f-zip-hint'}
            />
            {zipError ? (
              <div id="f-zip-err" className="field-error" data-testid="zip-error" role="alert">
                {zipError}
              </div>
            ) : field === 'zip' ? (
              fieldErr('zip')
            ) : (
              <div id="f-zip-hint" className="hint">
                At most {mib(MAX_ZIP)}, {mib(MAX_UNPACKED)} unpacked. Binary files are kept as they are.
              </div>
            )}
            {f.zip && (
              <div className="zip-preview" data-testid="zip-preview">
                <PackageFiles files={f.zip.files} height={260} initial={handlerFile(f.handler, f.runtime, f.zip.files)} />
              </div>
            )}
          </div>
        )}
      </div>

      <div className="card">
        <h2 className="card-title">Layers</h2>
        <div className="field">
          <LayersPicker value={f.layers} onChange={(v) => set('layers', v)} invalid={field === 'layers'} />
          {fieldErr('layers') ?? <div className="hint">Zips shared by functions, mounted read-only under /opt in this order (later ones win). At most 5.</div>}
        </div>
      </div>

      <div className="card">
        <h2 className="card-title">Configuration</h2>
        <div className="grid-3">
          <div className="field">
            <label htmlFor="f-memory">Memory (MiB)</label>
            <input id="f-memory" type="number" inputMode="numeric" value={f.memory} onChange={(e) => set('memory', e.target.value)} {...invalid('memory')} />
            {fieldErr('memory') ?? <div className="hint">64 to 4096.</div>}
          </div>
          <div className="field">
            <label htmlFor="f-timeout">Timeout (seconds)</label>
            <input id="f-timeout" type="number" inputMode="numeric" value={f.timeout} onChange={(e) => set('timeout', e.target.value)} {...invalid('timeout')} />
            {fieldErr('timeout') ?? <div className="hint">1 to 900.</div>}
          </div>
          <div className="field">
            <label htmlFor="f-route">HTTP route</label>
            <div className="input-prefix">
              <span>/api/execute/</span>
              <input id="f-route" value={f.route} onChange={(e) => set('route', e.target.value)} placeholder="optional" spellCheck={false} {...invalid('route')} />
            </div>
            {fieldErr('route')}
            <label className="check">
              <input id="f-public" type="checkbox" checked={f.public} onChange={(e) => set('public', e.target.checked)} />
              Public: the route can be called without credentials
            </label>
            {fieldErr('public')}
          </div>
        </div>
        <div className="field">
          <label htmlFor="f-description">Description</label>
          <input id="f-description" value={f.description} onChange={(e) => set('description', e.target.value)} placeholder="optional" {...invalid('description')} />
          {fieldErr('description')}
        </div>
        <div className="field">
          <label htmlFor="f-egress">Network egress</label>
          <textarea
            id="f-egress"
            className="egress"
            rows={Math.min(8, Math.max(3, f.egress.split('\n').length + 1))}
            value={f.egress}
            onChange={(e) => {
              set('egress', e.target.value);
              if (field === 'egress') setError(null);
            }}
            placeholder={'No network. One entry per line, e.g.\n198.18.0.0/24\napi.example.com:443'}
            spellCheck={false}
            autoComplete="off"
            aria-invalid={egressInvalid ? true : undefined}
            aria-describedby={egressInvalid ? 'f-egress-err' : 'f-egress-hint'}
          />
          {field === 'egress' ? (
            <div id="f-egress-err" className="field-error" data-from="server">
              {(error as ApiError).message}
            </div>
          ) : egressClientError !== null ? (
            <div id="f-egress-err" className="field-error" data-from="client" aria-live="polite">
              {egressClientError}
            </div>
          ) : (
            <div id="f-egress-hint" className="hint">
              Where the function may connect: a CIDR (198.18.0.0/24), a host name (api.example.com, or *.example.com for its subdomains) or
              public, each with an optional :port. At most {MAX_EGRESS_ENTRIES}. Empty: no network.
            </div>
          )}
        </div>
        <div className="field">
          <label htmlFor="f-secrets">Secrets</label>
          <SecretsPicker value={f.secrets} onChange={(v) => set('secrets', v)} invalid={field === 'secrets'} describedBy={field === 'secrets' ? 'f-secrets-err' : 'f-secrets-hint'} />
          {fieldErr('secrets') ?? (
            <div id="f-secrets-hint" className="hint">
              Each run gets these secrets as environment variables of the same names (values are set on the <Link href="/secrets">Secrets</Link> page and never shown).
            </div>
          )}
        </div>
        <fieldset className="env">
          <legend>Environment variables</legend>
          {f.env.length === 0 && <div className="muted small">None.</div>}
          {f.env.map((row, i) => (
            <div className="env-row" key={row.key}>
              <input
                aria-label={`Variable ${i + 1} name`}
                id={i === 0 ? 'f-env' : undefined}
                placeholder="NAME"
                value={row.name}
                spellCheck={false}
                onChange={(e) => set('env', f.env.map((r) => (r.key === row.key ? { ...r, name: e.target.value } : r)))}
                aria-invalid={field === 'env' ? true : undefined}
              />
              <input
                aria-label={`Variable ${i + 1} value`}
                placeholder="value"
                value={row.value}
                spellCheck={false}
                onChange={(e) => set('env', f.env.map((r) => (r.key === row.key ? { ...r, value: e.target.value } : r)))}
              />
              <button type="button" className="btn btn-icon" aria-label={`Remove variable ${i + 1}`} onClick={() => set('env', f.env.filter((r) => r.key !== row.key))}>
                ×
              </button>
            </div>
          ))}
          {fieldErr('env')}
          <button type="button" className="btn btn-small" onClick={() => set('env', [...f.env, { key: envKey++, name: '', value: '' }])}>
            Add variable
          </button>
        </fieldset>
      </div>
      <div className="form-foot">
        <Link href={fn ? `/functions/${fn.id}` : '/functions'} className="btn">
          Cancel
        </Link>
        <button type="submit" className="btn btn-primary" disabled={busy}>
          {busy ? 'Saving…' : fn ? 'Save changes' : 'Create function'}
        </button>
      </div>
    </form>
  );
}
