// A guard for test files that drive iptables: the machine's own firewall must be
// the same after the file as before it. A backend pointed at the wrong netns (an
// undefined path means "the current one") writes to the machine itself; the guard
// fails the file and puts the machine's tables back, pass or fail.
import { after, before } from 'node:test';
import { execFileSync } from 'node:child_process';

const FAMILIES = [
  ['iptables-save', 'iptables-restore'],
  ['ip6tables-save', 'ip6tables-restore'],
] as const;

function save(cmd: string): string {
  return execFileSync(cmd, [], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

export function guardHostFirewall(): void {
  const snapshot = new Map<string, string>();
  before(() => {
    for (const [s] of FAMILIES) snapshot.set(s, save(s));
  });
  after(() => {
    const changed: string[] = [];
    for (const [s, r] of FAMILIES) {
      const was = snapshot.get(s)!;
      if (save(s) === was) continue;
      changed.push(s);
      // Every table the snapshot lists, restored whole (not --noflush): what the file added goes.
      execFileSync(r, [], { input: was + '\n' });
    }
    if (changed.length)
      throw new Error(`this file changed the machine's own firewall (${changed.join(', ')}); restored`);
  });
}
