// Function packages in the browser: a zip unpacked into a file map (fflate), text told from
// binary, the map zipped again for a save, and the limits the server enforces (SPEC §10),
// checked here first so a person sees a clear message before a 50 MiB upload, not after.
//
// Everything in a package is untrusted: names are only ever rendered as text (React escapes
// them) and contents only go into Monaco's model, never into the DOM as markup.
import { unzipSync, zipSync, type Zippable } from 'fflate';

/** The zip itself, as uploaded (Lambda's limit). */
export const MAX_ZIP = 50 * 1024 * 1024;
/** Everything in it, unpacked. */
export const MAX_UNPACKED = 250 * 1024 * 1024;
/** Entries of a `files` package. */
export const MAX_FILES = 1000;
/** A text file larger than this is listed, not opened (Monaco gets slow long before the limit). */
export const MAX_EDIT = 2 * 1024 * 1024;

/** One file of a package: its bytes, and its text when it is UTF-8 without NUL bytes. */
export interface PkgFile {
  bytes: Uint8Array;
  text: string | null;
}

/** A package as the dashboard holds it: path → file, paths with `/`, no directories. */
export type FileMap = Map<string, PkgFile>;

/** A problem with a package found in the browser (shown as the API's errors are). */
export class PackageProblem extends Error {
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export function mib(n: number): string {
  return `${(n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}

/** A size for people: B, KiB or MiB. */
export function sizeText(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return mib(n);
}

const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

/** The text of `bytes` when it is a text file (UTF-8, no NUL), else null. */
export function textOf(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return decoder.decode(bytes);
  } catch {
    return null;
  }
}

export function fileOfText(text: string): PkgFile {
  return { bytes: encoder.encode(text), text };
}

/**
 * Why `path` cannot name a file of a package, or null when it can: the server's rules (relative,
 * `/`-separated, no empty, `.` or `..` segment, no backslash or NUL, at most 1,024 bytes, 255 a
 * segment). `typed` (a name a person enters) also refuses control characters.
 */
export function pathProblem(path: string, typed = true): string | null {
  if (path === '') return 'a file needs a name';
  if (encoder.encode(path).length > 1024) return 'the path is longer than 1,024 bytes';
  if (path.startsWith('/') || /^[A-Za-z]:(\/|$)/.test(path)) return 'the path must be relative (no leading / or drive letter)';
  if (path.includes('\\')) return 'use / to separate folders, not \\';
  if (path.includes('\u0000')) return 'the path has a NUL character';
  // eslint-disable-next-line no-control-regex
  if (typed && /[\u0001-\u001f\u007f]/.test(path)) return 'the path has a control character';
  for (const seg of path.split('/')) {
    if (seg === '') return 'the path has an empty folder name (// or a trailing /)';
    if (seg === '.' || seg === '..') return `the path may not contain "${seg}"`;
    if (encoder.encode(seg).length > 255) return 'a folder or file name is longer than 255 bytes';
  }
  return null;
}

/**
 * Unpacks a zip into a file map, refusing what the server would refuse before inflating
 * anything: more than MAX_UNPACKED declared, unsafe names, duplicates.
 */
export function unpack(zip: Uint8Array, opts: { checkLimits?: boolean } = {}): FileMap {
  const check = opts.checkLimits ?? true;
  if (check && zip.length > MAX_ZIP) throw new PackageProblem('payload_too_large', `The zip is ${mib(zip.length)}; the limit is ${mib(MAX_ZIP)}.`);
  let declared = 0;
  const seen = new Set<string>();
  let problem: PackageProblem | null = null;
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(zip, {
      // Called for every entry before it is inflated: the sizes the archive declares.
      filter: (f) => {
        if (problem) return false;
        if (f.name.endsWith('/')) return false; // a directory entry
        declared += f.originalSize;
        const why = pathProblem(f.name, false);
        if (why) problem = new PackageProblem('invalid_package', `${f.name}: ${why}`);
        else if (seen.has(f.name)) problem = new PackageProblem('invalid_package', `${f.name}: a duplicate entry`);
        else if (check && declared > MAX_UNPACKED)
          problem = new PackageProblem('payload_too_large', `The zip unpacks to more than ${mib(MAX_UNPACKED)} (the limit); it would be refused.`);
        seen.add(f.name);
        return !problem;
      },
    });
  } catch (e) {
    if (problem) throw problem;
    throw new PackageProblem('invalid_package', `Not a zip archive we can read: ${(e as Error).message}`);
  }
  if (problem) throw problem;
  const files: FileMap = new Map();
  for (const name of Object.keys(entries).sort()) {
    const bytes = entries[name];
    files.set(name, { bytes, text: textOf(bytes) });
  }
  return files;
}

/** The file map as a zip (deflated), in path order. */
export function pack(files: FileMap): Uint8Array {
  const z: Zippable = {};
  for (const path of [...files.keys()].sort()) {
    // A fixed time: the same files give the same zip.
    z[path] = [files.get(path)!.bytes, { mtime: new Date('1980-01-02T00:00:00Z') }];
  }
  return zipSync(z, { level: 6 });
}

/** Total unpacked bytes. */
export function unpackedSize(files: FileMap): number {
  let n = 0;
  for (const f of files.values()) n += f.bytes.length;
  return n;
}

/** The map as the API's `files` (every file must be text). */
export function asTextFiles(files: FileMap): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [path, f] of files) {
    if (f.text === null) throw new PackageProblem('invalid_package', `${path} is not a text file: upload a zip to include binary files`);
    out[path] = f.text;
  }
  return out;
}

/** Base64 of bytes, without building one huge binary string. */
export function base64(bytes: Uint8Array): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => {
      const url = String(r.result);
      resolve(url.slice(url.indexOf(',') + 1));
    };
    r.onerror = () => reject(r.error ?? new Error('could not read the archive'));
    r.readAsDataURL(new Blob([bytes as BlobPart]));
  });
}

/** Reads a picked zip file, refusing one over MAX_ZIP before reading a byte of it. */
export async function readZipFile(file: File): Promise<Uint8Array> {
  if (file.size > MAX_ZIP) throw new PackageProblem('payload_too_large', `${file.name} is ${mib(file.size)}; a package zip may be at most ${mib(MAX_ZIP)}.`);
  return new Uint8Array(await file.arrayBuffer());
}

/** The file of a `module.function` handler's module (`pkg.mod.handler` → pkg/mod.py or pkg/mod.js), when the package has it. */
export function handlerFile(handler: string, runtime: string, files: FileMap): string | undefined {
  const mod = handler.split('.').slice(0, -1).join('/');
  if (!mod) return undefined;
  for (const ext of runtime.startsWith('python') ? ['.py'] : ['.js', '.mjs', '.cjs']) if (files.has(mod + ext)) return mod + ext;
  return undefined;
}

/** Monaco's language for a file name. */
export function languageOf(path: string): 'python' | 'javascript' | 'json' | 'plaintext' {
  const ext = /\.([A-Za-z0-9]+)$/.exec(path)?.[1]?.toLowerCase() ?? '';
  if (ext === 'py' || ext === 'pyi') return 'python';
  if (ext === 'js' || ext === 'mjs' || ext === 'cjs') return 'javascript';
  if (ext === 'json') return 'json';
  return 'plaintext';
}

/** A folder of the tree: sub-folders and files, both sorted by name. */
export interface TreeDir {
  name: string;
  path: string;
  dirs: TreeDir[];
  files: { name: string; path: string }[];
}

/** The file paths as a folder tree. */
export function treeOf(paths: Iterable<string>): TreeDir {
  const root: TreeDir = { name: '', path: '', dirs: [], files: [] };
  for (const p of [...paths].sort()) {
    const segs = p.split('/');
    let dir = root;
    for (let i = 0; i < segs.length - 1; i++) {
      let next = dir.dirs.find((d) => d.name === segs[i]);
      if (!next) {
        next = { name: segs[i], path: segs.slice(0, i + 1).join('/'), dirs: [], files: [] };
        dir.dirs.push(next);
      }
      dir = next;
    }
    dir.files.push({ name: segs[segs.length - 1], path: p });
  }
  const sort = (d: TreeDir) => {
    d.dirs.sort((a, b) => (a.name < b.name ? -1 : 1));
    d.files.sort((a, b) => (a.name < b.name ? -1 : 1));
    d.dirs.forEach(sort);
  };
  sort(root);
  return root;
}
