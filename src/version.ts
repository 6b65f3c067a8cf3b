// Version facts reported by /version and `cnmctl version`.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const API_VERSION = '1.41';
export const MIN_API_VERSION = '1.24';

function readPackageVersion(): string {
  for (const p of [
    path.resolve(__dirname, '..', '..', 'package.json'),
    path.resolve(__dirname, '..', 'package.json'),
  ]) {
    try {
      return JSON.parse(fs.readFileSync(p, 'utf8')).version as string;
    } catch (e) {
      // Not at this path (built tree vs source tree): try the next.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return '0.0.0';
}

export const VERSION = readPackageVersion();
