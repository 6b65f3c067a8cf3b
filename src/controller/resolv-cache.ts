// The host's resolv.conf files, parsed once and read again only when they
// change: every sandbox create and every forwarded DNS query asks for them, and
// a stat costs one syscall where a read costs four (each slow after the daemon
// was idle: docs/design-notes.md, "Where a macvlan attach's time goes").
import * as fs from 'node:fs';
import { ParsedResolvConf, parseResolvConf } from './sandbox-files';

/**
 * A file changed this recently is read again next time too: the kernel stamps
 * changes with a coarse clock (a tick, up to 10 ms), so a rewrite of the same
 * size within the tick of the last read would leave its stamp as it was (git's
 * "racy" entries).
 */
const RACY_MS = 1000;

interface Entry {
  /** The file's identity and last change as stat reports them: any rewrite (in place or renamed over) moves one. */
  stamp: string;
  parsed: Readonly<ParsedResolvConf>;
}

export class ResolvConfCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly racyMs = RACY_MS) {}

  /** The file parsed (frozen: shared by every caller); undefined when it does not exist. Other errors throw. */
  read(file: string): Readonly<ParsedResolvConf> | undefined {
    const st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
    if (!st) {
      this.entries.delete(file);
      return undefined;
    }
    const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const hit = this.entries.get(file);
    if (hit?.stamp === stamp) return hit.parsed;
    const p = parseResolvConf(fs.readFileSync(file, 'utf8'));
    for (const list of Object.values(p)) Object.freeze(list);
    const parsed = Object.freeze(p);
    if (Date.now() - Number(st.ctimeMs) > this.racyMs) this.entries.set(file, { stamp, parsed });
    else this.entries.delete(file);
    return parsed;
  }
}
