// This test process's children, read from /proc (zombies included): what a call left behind.
import * as fs from 'node:fs';

/** Pids whose parent is this process, and whose command line matches `cmd` if given. */
export function childPids(cmd?: RegExp): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if (cmd && !cmd.test(fs.readFileSync(`/proc/${d}/cmdline`, 'utf8'))) continue;
      out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}
