// Layers: the caller's layers (latest version of each), a zip upload that makes a new
// version (of a new or an existing name), and each name's versions with delete.
import { useRef, useState, type FormEvent } from 'react';
import { api, ApiError, get, type Layer } from '../api';
import { allLayers, itemsOf } from '../components/LayersPicker';
import { ConfirmButton, Empty, ErrorBox, Spinner, useLoad, usePageTitle } from '../components/ui';
import { ago } from '../format';
import { base64, MAX_ZIP, mib, readZipFile, sizeText, unpack } from '../packages';
import { useToast } from '../toast';

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function Layers() {
  usePageTitle('Layers');
  const list = useLoad((s) => allLayers(s), []);
  const [open, setOpen] = useState<string | null>(null);

  return (
    <div className="page">
      <div className="page-head">
        <h1>Layers</h1>
      </div>
      <Upload onUploaded={() => list.reload()} names={(list.data ?? []).map((l) => l.name)} />
      {list.error ? (
        <ErrorBox error={list.error} retry={list.reload} />
      ) : list.loading && !list.data ? (
        <Spinner label="Loading layers…" />
      ) : !list.data?.length ? (
        <Empty title="No layers yet">
          <p>A layer is a zip shared by functions, mounted read-only under /opt (python/ and nodejs/node_modules/ are on the module paths).</p>
        </Empty>
      ) : (
        <div className="card table-card">
          <div className="table-scroll">
            <table className="table" data-testid="layers-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th className="num">Latest</th>
                  <th className="num">Size</th>
                  <th className="hide-sm">Created</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {list.data.map((l) => (
                  <LayerRow key={l.name} layer={l} open={open === l.name} onToggle={() => setOpen(open === l.name ? null : l.name)} onChanged={list.reload} />
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </div>
  );
}

function LayerRow({ layer, open, onToggle, onChanged }: { layer: Layer; open: boolean; onToggle: () => void; onChanged: () => void }) {
  return (
    <>
      <tr data-testid="layer-row" data-name={layer.name}>
        <td>
          <strong>{layer.name}</strong>
          {layer.description && <div className="muted small clip">{layer.description}</div>}
        </td>
        <td className="num">v{layer.version}</td>
        <td className="num">{sizeText(layer.size)}</td>
        <td className="hide-sm muted">{ago(layer.created_at)}</td>
        <td className="num">
          <button type="button" className="btn btn-small" aria-expanded={open} onClick={onToggle}>
            {open ? 'Hide versions' : 'Versions'}
          </button>
        </td>
      </tr>
      {open && (
        <tr className="layer-versions-row">
          <td colSpan={5}>
            <Versions name={layer.name} onChanged={onChanged} />
          </td>
        </tr>
      )}
    </>
  );
}

function Versions({ name, onChanged }: { name: string; onChanged: () => void }) {
  const toast = useToast();
  const vs = useLoad((s) => get<{ items: Layer[] } | Layer[]>(`/api/layers/${encodeURIComponent(name)}/versions`, s).then(itemsOf), [name]);
  const [busy, setBusy] = useState<number | null>(null);
  const remove = async (v: number) => {
    setBusy(v);
    try {
      await api('DELETE', `/api/layers/${encodeURIComponent(name)}/versions/${v}`);
      toast('success', `Deleted ${name}:${v}`);
      vs.reload();
      onChanged();
    } catch (e) {
      toast('error', e instanceof ApiError && e.code === 'layer_in_use' ? `${name}:${v} is in use: ${e.message}` : e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };
  if (vs.error) return <ErrorBox error={vs.error} retry={vs.reload} />;
  if (!vs.data) return <Spinner />;
  return (
    <ul className="layer-versions" data-testid="layer-versions">
      {[...vs.data]
        .sort((a, b) => b.version - a.version)
        .map((v) => (
          <li key={v.version} data-testid="layer-version" data-version={v.version}>
            <code>
              {name}:{v.version}
            </code>
            <span className="muted small">
              {sizeText(v.size)} · {ago(v.created_at)} · sha256 {v.sha256.slice(0, 12)}
            </span>
            <ConfirmButton small label="Delete" confirmLabel={`Delete ${name}:${v.version}`} onConfirm={() => void remove(v.version)} busy={busy === v.version} />
          </li>
        ))}
    </ul>
  );
}

function Upload({ onUploaded, names }: { onUploaded: () => void; names: string[] }) {
  const toast = useToast();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [file, setFile] = useState<File | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const fileRef = useRef<HTMLInputElement>(null);
  const nameProblem = name && !NAME.test(name) ? 'Letters, digits, _ and -, at most 64.' : null;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (busy || !file) return;
    setBusy(true);
    setError(null);
    try {
      const zip = await readZipFile(file);
      unpack(zip); // refuse here what the server would refuse, before the upload
      const body: Record<string, unknown> = { name: name.trim(), zip: await base64(zip) };
      if (description.trim()) body.description = description.trim();
      const l = await api<Layer>('POST', '/api/layers', { body });
      toast('success', `Uploaded ${l.name}:${l.version}`);
      setFile(null);
      setDescription('');
      if (fileRef.current) fileRef.current.value = '';
      onUploaded();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" onSubmit={submit} noValidate data-testid="layer-upload">
      <h2 className="card-title">Upload a layer version</h2>
      <ErrorBox error={error} />
      <div className="grid-3">
        <div className="field">
          <label htmlFor="l-name">Name</label>
          <input id="l-name" list="l-names" value={name} onChange={(e) => setName(e.target.value)} placeholder="my-libs" spellCheck={false} autoComplete="off" aria-invalid={nameProblem ? true : undefined} />
          <datalist id="l-names">
            {names.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
          {nameProblem ? <div className="field-error">{nameProblem}</div> : <div className="hint">An existing name gets a new version.</div>}
        </div>
        <div className="field">
          <label htmlFor="l-zip">Zip</label>
          <input id="l-zip" ref={fileRef} type="file" accept=".zip,application/zip" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
          <div className="hint">At most {mib(MAX_ZIP)}; python/ and nodejs/node_modules/ land on the module paths.</div>
        </div>
        <div className="field">
          <label htmlFor="l-description">Description</label>
          <input id="l-description" value={description} onChange={(e) => setDescription(e.target.value)} placeholder="optional" />
        </div>
      </div>
      <div className="form-foot">
        <button type="submit" className="btn btn-primary" disabled={busy || !file || !name || !!nameProblem}>
          {busy ? 'Uploading…' : 'Upload'}
        </button>
      </div>
    </form>
  );
}
