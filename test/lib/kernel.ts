// What the running kernel was built with, for tests that need a feature it may lack.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as zlib from 'node:zlib';

/** The running kernel's config text ('' when neither /proc/config.gz nor /boot/config-* is readable). */
export function kernelConfig(): string {
  try {
    return zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString();
  } catch {
    try {
      return fs.readFileSync(`/boot/config-${os.release()}`, 'utf8');
    } catch {
      return '';
    }
  }
}

export const KERNEL_CONFIG = kernelConfig();

/** true: built in or a module; false: "is not set" or absent; undefined: no config to read. */
export function kernelHas(option: string): boolean | undefined {
  if (KERNEL_CONFIG === '') return undefined;
  return new RegExp(`^${option}=[ym]$`, 'm').test(KERNEL_CONFIG);
}
