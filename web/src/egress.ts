// The egress list's rules (SPEC §11), as crates/voltrun-core/src/egress.rs and
// function.rs::canonical_egress state them, so the form can say what is wrong while you type.
// The messages are the server's, word for word ("egress: entry "x": why"); the server stays the
// authority: its 400 is shown beside the field the same way.

/** Most entries a list may hold (MAX_EGRESS_ENTRIES). */
export const MAX_EGRESS_ENTRIES = 64;
/** Longest entry, in characters (MAX_EGRESS_ENTRY_CHARS). */
const MAX_ENTRY_CHARS = 262;

/** The form's text (one entry per line) as the list sent: each line trimmed, blank lines dropped. */
export function egressLines(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

/** The server's message for the first bad entry of `entries`, or null when the list is valid. */
export function egressError(entries: string[]): string | null {
  if (entries.length > MAX_EGRESS_ENTRIES) return `egress: at most ${MAX_EGRESS_ENTRIES} entries (got ${entries.length})`;
  for (const e of entries) {
    const why = entryError(e);
    if (why !== null) return `egress: entry ${quote(shown(e))}: ${why}`;
  }
  return null;
}

/** Rust's `{:?}` of a string, for the characters an entry holds. */
function quote(s: string): string {
  return JSON.stringify(s);
}

/** The entry as the error shows it: its first 80 characters, then … when cut. */
function shown(e: string): string {
  const chars = [...e];
  return chars.length > 80 ? chars.slice(0, 80).join('') + '…' : e;
}

function entryError(entry: string): string | null {
  if (entry.trim() === '') return 'empty entry';
  if ([...entry].length > MAX_ENTRY_CHARS) return `longer than ${MAX_ENTRY_CHARS} characters`;
  if (entry !== entry.trim()) return 'leading or trailing spaces';
  let target: string;
  let port: string | null = null;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close < 0) return "an opening '[' without ']'";
    target = entry.slice(1, close);
    const after = entry.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) return "expected ':port' after ']'";
      port = after.slice(1);
    }
  } else {
    const colons = entry.split(':').length - 1;
    if (colons === 1) [target, port] = entry.split(':') as [string, string];
    else target = entry; // none, or several: an IPv6 address or CIDR without a port
  }
  if (port !== null) {
    const n = /^[0-9]{1,5}$/.test(port) ? Number(port) : NaN;
    if (!(n >= 1 && n <= 65535)) return `port ${quote(port)} is not a number from 1 to 65535`;
  }
  return targetError(target);
}

function targetError(t: string): string | null {
  if (t === '') return "missing destination before ':'";
  if (t.toLowerCase() === 'public') return null;
  if (t.includes('/') || parseIp(t) !== null) return cidrError(t);
  if (t.startsWith('*.')) return hostError(t.slice(2));
  if (t.includes('*')) return "a wildcard is allowed only as a leading '*.'";
  return hostError(t);
}

function hostError(h: string): string | null {
  if (new TextEncoder().encode(h).length > 253) return 'host name longer than 253 characters';
  const labels = h.split('.');
  for (const label of labels) {
    if (label === '') return 'host name with an empty label';
    if (new TextEncoder().encode(label).length > 63) return 'host name label longer than 63 characters';
    if (!/^[A-Za-z0-9-]+$/.test(label)) return `host name label ${quote(label)} may hold only letters, digits and '-'`;
    if (label.startsWith('-') || label.endsWith('-')) return `host name label ${quote(label)} starts or ends with '-'`;
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return 'not a valid address, CIDR or host name';
  return null;
}

/** An address as its bytes (4 for IPv4, 16 for IPv6), or null: Rust's `IpAddr` parser. */
type Ip = number[];

function parseV4(s: string): Ip | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    // Decimal, at most 255, no leading zero (Rust refuses octal-looking parts).
    if (!/^[0-9]{1,3}$/.test(p) || (p.length > 1 && p.startsWith('0'))) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

function parseV6(s: string): Ip | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (part: string, last: boolean): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const g = items[i];
      if (last && i === items.length - 1 && g.includes('.')) {
        const v4 = parseV4(g);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) out.push(parseInt(g, 16));
      else return null;
    }
    return out;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = groups(halves[0], false);
    const tail = groups(halves[1], true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    words = [...head, ...Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = groups(s, true);
    if (!all || all.length !== 8) return null;
    words = all;
  }
  return words.flatMap((w) => [w >> 8, w & 0xff]);
}

function parseIp(s: string): Ip | null {
  return parseV4(s) ?? (s.includes(':') ? parseV6(s) : null);
}

/** Rust's `Display` of an address. */
function showIp(ip: Ip): string {
  if (ip.length === 4) return ip.join('.');
  const w = Array.from({ length: 8 }, (_, i) => (ip[2 * i] << 8) | ip[2 * i + 1]);
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) return `::ffff:${ip.slice(12).join('.')}`;
  // The longest run of two or more zero groups (the first of equals) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(w) : `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

function cidrError(s: string): string | null {
  const slash = s.indexOf('/');
  const a = slash < 0 ? s : s.slice(0, slash);
  const p = slash < 0 ? null : s.slice(slash + 1);
  const ip = parseIp(a);
  if (!ip) return `${quote(a)} is not an IPv4 or IPv6 address`;
  const max = ip.length * 8;
  let prefix = max;
  if (p !== null) {
    // As Rust's u8 parser, with a leading '+' and leading zeros refused as the server does.
    const n = /^[0-9]{1,3}$/.test(p) && (p === '0' || !p.startsWith('0')) ? Number(p) : NaN;
    if (!(n <= max)) return `prefix length ${quote(p)} must be 0 to ${max}`;
    prefix = n;
  }
  const net = ip.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
  if (net.some((b, i) => b !== ip[i])) return `host bits set: did you mean ${showIp(net)}/${prefix}?`;
  return null;
}
