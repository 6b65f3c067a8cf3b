import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResolvConfCache } from '../../../src/controller/resolv-cache';

const RACY_MS = 50;
/** Past the racy window of the file's last change (the kernel's change times move by clock ticks). */
const settle = () => new Promise((r) => setTimeout(r, RACY_MS + 20));

test('resolv.conf cache: parsed once while unchanged; any rewrite, rename over, removal or recreation is seen', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-resolv-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'resolv.conf');
  const c = new ResolvConfCache(RACY_MS);
  assert.equal(c.read(file), undefined, 'missing: undefined');

  fs.writeFileSync(file, 'nameserver 10.0.0.1\nsearch a.example\noptions ndots:2\n');
  await settle();
  const first = c.read(file)!;
  assert.deepEqual(first, { nameservers: ['10.0.0.1'], search: ['a.example'], options: ['ndots:2'] });
  assert.equal(c.read(file), first, 'unchanged: the same parse, not read again');
  assert.throws(() => (first.nameservers as string[]).push('x'), TypeError, 'shared: frozen');

  // Rewritten in place with the same size, its modification time set back: the change time moved.
  const old = fs.statSync(file);
  fs.writeFileSync(file, 'nameserver 10.0.0.2\nsearch b.example\noptions ndots:3\n');
  fs.utimesSync(file, old.atime, old.mtime);
  assert.deepEqual(c.read(file)!.nameservers, ['10.0.0.2']);
  // Rewritten again with the same size at once, within the clock tick of that read: still seen.
  fs.writeFileSync(file, 'nameserver 10.0.0.3\nsearch c.example\noptions ndots:4\n');
  assert.deepEqual(c.read(file)!.nameservers, ['10.0.0.3']);

  // Renamed over (as resolvconf and NetworkManager write it).
  await settle();
  assert.deepEqual(c.read(file)!.nameservers, ['10.0.0.3']);
  const tmp = path.join(dir, 'resolv.conf.new');
  fs.writeFileSync(tmp, 'nameserver 10.0.0.4\nsearch d.example\noptions ndots:5\n');
  fs.renameSync(tmp, file);
  assert.deepEqual(c.read(file)!.nameservers, ['10.0.0.4']);

  fs.rmSync(file);
  assert.equal(c.read(file), undefined, 'removed: undefined');
  fs.writeFileSync(file, 'nameserver 10.0.0.5\n');
  assert.deepEqual(c.read(file)!.nameservers, ['10.0.0.5'], 'recreated: read');
});
