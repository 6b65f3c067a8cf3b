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

/**
 * The first GCM SA makes the kernel load and self-test esp4, gcm and ghash, which under TCG
 * can outlast the netlink layer's 10 s: done once by ip (no timeout) on a throwaway SA.
 */
export function warmGcm(ns: { run(cmd: string, args: string[]): string }, src: string, dst: string): void {
  const key = '0x' + '11'.repeat(36);
  ns.run('ip', [
    'xfrm',
    'state',
    'add',
    'src',
    src,
    'dst',
    dst,
    'proto',
    'esp',
    'spi',
    '0x99',
    'mode',
    'transport',
    'aead',
    'rfc4106(gcm(aes))',
    key,
    '128',
  ]);
  ns.run('ip', ['xfrm', 'state', 'flush']);
}
