// Sysctls of the daemon's own netns (/proc/sys/net is per network namespace,
// seen through the namespace of the process that opens it).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CnmdError } from '../errors';

/** Writes /proc/sys/<segments...>; segments keep interface names with dots intact. */
export function writeSysctl(segments: string[], value: string): void {
  const p = path.join('/proc/sys', ...segments);
  try {
    if (fs.readFileSync(p, 'utf8').trim() === value) return;
    fs.writeFileSync(p, value);
  } catch (e) {
    throw new CnmdError('KERNEL_ERROR', `sysctl ${segments.join('.')}=${value}: ${(e as Error).message}`, {
      op: 'sysctl',
      object: segments.join('.'),
      errno: (e as NodeJS.ErrnoException).code,
      cause: e,
    });
  }
}
