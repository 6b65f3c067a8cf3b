// Hostile values for the chaos lane's fuzzers, drawn from a seeded generator.
import type { Rng } from './seed';

export const HOSTILE_STRINGS = [
  '',
  ' ',
  '\n',
  'a\nb',
  '\r\n',
  '\t',
  '+',
  '*',
  'br+',
  'br%d',
  '%s%n',
  '-A',
  '--help',
  '!x',
  '../../etc/passwd',
  '/',
  '.',
  '..',
  'x'.repeat(300),
  'y'.repeat(5000),
  '\u0000',
  'a\u0000b',
  'éth0',
  '名前',
  '😀',
  '$(id)',
  '`id`',
  '; rm -rf /',
  '${jndi:x}',
  '((a+)+)+b',
  '([0-9a-f]+)+g',
  '(',
  '[',
  '\\',
  '"',
  "'",
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '0x10',
  '1e3',
  '-1',
  '0',
  '65536',
  '4294967296',
  'NaN',
  'null',
  'true',
  '10.0.0.0/8',
  '0.0.0.0/0',
  '127.0.0.0/8',
  '::/0',
  'fe80::/64',
  '10.1.0.0/024',
  '256.1.1.1/24',
  '10.1.0.1',
  '1.2.3.4\nnameserver 6.6.6.6',
  'ndots:1\noptions evil',
  '80',
  '8080:80',
  ' 8080:80',
  '0.0.0.0:1-65535:1-65535',
  'web',
  'bridge',
  'host',
  'none',
];

/** A JSON value of any type, hostile strings included; depth-bounded. */
export function hostileValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 6 : 9)) {
    case 0:
    case 1:
    case 2:
      return r.pick(HOSTILE_STRINGS);
    case 3:
      return r.pick([0, -1, 1, 1.5, 65535, 65536, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308]);
    case 4:
      return r.pick([true, false, null]);
    case 5:
      return r.bytes(r.int(16)).toString('latin1');
    case 6:
      return Array.from({ length: r.int(4) }, () => hostileValue(r, depth + 1));
    case 7:
      return Object.fromEntries(
        Array.from({ length: r.int(4) }, () => [r.pick(HOSTILE_STRINGS), hostileValue(r, depth + 1)]),
      );
    default:
      return Array.from({ length: 40 }).reduce<unknown>((acc) => [acc], 1);
  }
}

/** `template` with one to three fields (at any depth) replaced by hostile values, or removed. */
export function mutate(r: Rng, template: unknown): unknown {
  const copy = JSON.parse(JSON.stringify(template));
  for (let n = 1 + r.int(3); n > 0; n--) {
    let node = copy;
    for (let depth = 0; depth < 4; depth++) {
      if (!node || typeof node !== 'object') break;
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      const k = r.pick(keys);
      const child = (node as any)[k];
      if (child && typeof child === 'object' && r.next() < 0.5) {
        node = child;
        continue;
      }
      if (r.next() < 0.15) delete (node as any)[k];
      else (node as any)[k] = hostileValue(r);
      break;
    }
  }
  return copy;
}

/** Runs `n` tasks, `width` at a time. */
export async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) await task(next++);
    }),
  );
}
