// The function page's package card: the stored zip (`GET /api/functions/{id}/package`)
// unpacked in the browser into a tree, text files edited in Monaco, and Save zipping the
// files again into a `zip` update. A zip can also be uploaded to replace the package.
import { useEffect, useMemo, useRef, useState } from 'react';
import { api, ApiError, getBytes, type Fn } from '../api';
import { base64, handlerFile, MAX_ZIP, mib, pack, PackageProblem, readZipFile, sizeText, unpack, unpackedSize, type FileMap } from '../packages';
import { useToast } from '../toast';
import { PackageFiles } from './PackageFiles';
import { ErrorBox, Spinner } from './ui';

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function PackageEditor({ fn, onSaved }: { fn: Fn; onSaved: (f: Fn) => void }) {
  const toast = useToast();
  const [saved, setSaved] = useState<FileMap | null>(null);
  const [files, setFiles] = useState<FileMap | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [busy, setBusy] = useState<'save' | 'upload' | null>(null);
  const [tick, setTick] = useState(0);
  const [revision, setRevision] = useState(0);
  const uploadRef = useRef<HTMLInputElement>(null);
  const sha = fn.package?.sha256;
  // The server's files again when the package changed, or when an update failed (what serves is the old one).
  const failedUpdate = fn.last_update_status === 'failed';
  // The server refuses updates while a build runs (409 update_in_progress).
  const building = fn.state === 'pending' || fn.last_update_status === 'in_progress';

  useEffect(() => {
    const ctl = new AbortController();
    setLoadError(null);
    getBytes(`/api/functions/${encodeURIComponent(fn.id)}/package`, ctl.signal)
      .then((zip) => {
        if (ctl.signal.aborted) return;
        const m = unpack(zip);
        setSaved(m);
        setFiles(m);
        setRevision((r) => r + 1);
      })
      .catch((e) => {
        if (!ctl.signal.aborted) setLoadError(e);
      });
    return () => ctl.abort();
  }, [fn.id, sha, failedUpdate, tick]);

  const dirty = useMemo(() => {
    const d = new Set<string>();
    if (!files || !saved) return d;
    for (const [p, f] of files) {
      const s = saved.get(p);
      if (!s || (s !== f && !sameBytes(s.bytes, f.bytes))) d.add(p);
    }
    return d;
  }, [files, saved]);
  const changed = !!files && !!saved && (dirty.size > 0 || [...saved.keys()].some((p) => !files.has(p)));

  const put = async (zip: Uint8Array, what: string) => {
    const updated = await api<Fn>('PUT', `/api/functions/${encodeURIComponent(fn.id)}`, { body: { zip: await base64(zip) } });
    if (updated.last_update_status === 'in_progress') toast('info', `${what}: building dependencies; v${updated.version} serves until the build succeeds`);
    else toast('success', `${what} (version ${updated.version})`);
    return updated;
  };

  const save = async () => {
    if (!files || busy) return;
    setBusy('save');
    setError(null);
    try {
      const zip = pack(files);
      if (zip.length > MAX_ZIP) throw new PackageProblem('payload_too_large', `The package zips to ${mib(zip.length)}; the limit is ${mib(MAX_ZIP)}.`);
      const updated = await put(zip, `Saved ${fn.name}`);
      setSaved(files);
      onSaved(updated);
    } catch (e) {
      setError(e);
      toast('error', e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };

  const upload = async (file: File | undefined) => {
    if (!file || busy) return;
    setBusy('upload');
    setError(null);
    try {
      const zip = await readZipFile(file);
      const m = unpack(zip); // what the server would refuse, refused before the upload
      const updated = await put(zip, `Uploaded ${file.name}`);
      setSaved(m);
      setFiles(m);
      setRevision((r) => r + 1);
      onSaved(updated);
    } catch (e) {
      setError(e);
      if (!(e instanceof PackageProblem)) toast('error', e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(null);
      if (uploadRef.current) uploadRef.current.value = '';
    }
  };

  return (
    <section className="card" aria-labelledby="files-title" data-testid="package-card">
      <div className="card-head">
        <h2 className="card-title" id="files-title">
          Files
          {fn.package && (
            <span className="muted small">
              {' '}
              {fn.package.kind} · {sizeText(fn.package.size)} zipped · {sizeText(files ? unpackedSize(files) : fn.package.unpacked_size)} unpacked
            </span>
          )}
        </h2>
        <div className="actions">
          <label className="btn btn-small file-btn">
            {busy === 'upload' ? 'Uploading…' : 'Upload zip'}
            <input ref={uploadRef} type="file" accept=".zip,application/zip" className="sr-only" data-testid="upload-zip" disabled={!!busy || building} onChange={(e) => void upload(e.target.files?.[0])} />
          </label>
          {changed && (
            <button
              type="button"
              className="btn btn-small"
              disabled={!!busy}
              onClick={() => {
                setFiles(saved);
                setRevision((r) => r + 1);
              }}
            >
              Discard changes
            </button>
          )}
          <button
            type="button"
            className="btn btn-small btn-primary"
            data-testid="save-package"
            disabled={!changed || !!busy || building}
            title={building ? 'A build of this function is in progress: save when it has ended' : undefined}
            onClick={() => void save()}
          >
            {busy === 'save' ? 'Saving…' : 'Save files'}
          </button>
        </div>
      </div>
      <ErrorBox error={error instanceof PackageProblem ? new ApiError(400, error.code, error.message) : error} />
      {loadError ? (
        <ErrorBox error={loadError} retry={() => setTick((t) => t + 1)} />
      ) : !files ? (
        <Spinner label="Loading the package…" />
      ) : (
        <PackageFiles files={files} onChange={setFiles} dirty={dirty} revision={revision} initial={handlerFile(fn.handler, fn.runtime, files)} onSubmit={() => void save()} />
      )}
    </section>
  );
}
