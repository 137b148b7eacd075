// The layers of a function, in order (later layers win where files collide under /opt): at
// most MAX_LAYERS `name:version` entries, picked from the caller's layers.
import { useEffect, useState } from 'react';
import { get, type Layer } from '../api';
import { useLoad } from './ui';

export const MAX_LAYERS = 5;

/** A list answer as items, whether the API pages it (`{items}`) or not (an array). */
export function itemsOf<T>(r: { items: T[] } | T[]): T[] {
  return Array.isArray(r) ? r : r.items;
}

/** Every layer of the caller (latest version of each name), all pages (bounded). */
export async function allLayers(signal: AbortSignal): Promise<Layer[]> {
  const out: Layer[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 20; i++) {
    const r: { items: Layer[]; next_cursor?: string | null } | Layer[] = await get(`/api/layers?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, signal);
    out.push(...itemsOf(r));
    cursor = Array.isArray(r) ? null : (r.next_cursor ?? null);
    if (!cursor) break;
  }
  return out;
}

export function LayersPicker({ value, onChange, invalid }: { value: string[]; onChange: (v: string[]) => void; invalid?: boolean }) {
  const layers = useLoad((s) => allLayers(s), []);
  const [name, setName] = useState('');
  const [version, setVersion] = useState('');
  const versions = useLoad(
    (s) => (name ? get<{ items: Layer[] } | Layer[]>(`/api/layers/${encodeURIComponent(name)}/versions`, s).then(itemsOf) : Promise.resolve([] as Layer[])),
    [name],
  );
  // Default to the newest version of the picked layer.
  useEffect(() => {
    const vs = versions.data ?? [];
    if (vs.length) setVersion(String(Math.max(...vs.map((v) => v.version))));
    else setVersion('');
  }, [versions.data]);

  const full = value.length >= MAX_LAYERS;
  const add = () => {
    if (!name || !version || full) return;
    const entry = `${name}:${version}`;
    if (value.includes(entry)) return;
    onChange([...value, entry]);
    setName('');
  };
  const move = (i: number, by: number) => {
    const next = [...value];
    const [x] = next.splice(i, 1);
    next.splice(i + by, 0, x);
    onChange(next);
  };
  const names = (layers.data ?? []).map((l) => l.name);

  return (
    <div className="layers-picker" data-testid="layers-picker">
      {value.length === 0 ? (
        <div className="muted small">No layers.</div>
      ) : (
        <ol className="layer-list" data-testid="layer-list" aria-label="Layers, mounted in this order">
          {value.map((entry, i) => (
            <li key={entry} data-testid="layer-entry" data-layer={entry}>
              <span>
                <span className="muted small">{i + 1}.</span> <code>{entry}</code>
              </span>
              <span className="layer-actions">
                <button type="button" className="btn btn-icon btn-small" aria-label={`Move ${entry} up`} disabled={i === 0} onClick={() => move(i, -1)}>
                  ↑
                </button>
                <button type="button" className="btn btn-icon btn-small" aria-label={`Move ${entry} down`} disabled={i === value.length - 1} onClick={() => move(i, 1)}>
                  ↓
                </button>
                <button type="button" className="btn btn-icon btn-small" aria-label={`Remove ${entry}`} onClick={() => onChange(value.filter((v) => v !== entry))}>
                  ×
                </button>
              </span>
            </li>
          ))}
        </ol>
      )}
      <div className="layer-add">
        <select id="f-layers" aria-label="Layer" value={name} onChange={(e) => setName(e.target.value)} disabled={full} aria-invalid={invalid ? true : undefined}>
          <option value="">{layers.loading ? 'Loading layers…' : names.length ? 'Pick a layer…' : 'No layers yet'}</option>
          {names.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
        <select aria-label="Layer version" value={version} onChange={(e) => setVersion(e.target.value)} disabled={!name || full}>
          {(versions.data ?? [])
            .slice()
            .sort((a, b) => b.version - a.version)
            .map((v) => (
              <option key={v.version} value={v.version}>
                version {v.version}
              </option>
            ))}
        </select>
        <button type="button" className="btn btn-small" onClick={add} disabled={!name || !version || full}>
          Add layer
        </button>
      </div>
      {full && <div className="hint">At most {MAX_LAYERS} layers.</div>}
      {layers.error ? <div className="field-error">Could not load your layers: {layers.error instanceof Error ? layers.error.message : String(layers.error)}</div> : null}
    </div>
  );
}
