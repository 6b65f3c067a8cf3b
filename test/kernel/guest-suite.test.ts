// The kernel lane: what this machine's kernel lacks (ipvlan, 802.1Q vlan,
// dummy, ESP, GCM) proved inside Debian's kernel under qemu. Every compiled
// test under dist/test/kernel-guest/ runs in ONE VM; each guest test becomes a
// host subtest here.
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runGuestSuite } from '../lib/kernel-guest-suite';

const dir = path.resolve(__dirname, '..', 'kernel-guest');

test("kernel lane: link kinds and IPsec in Debian's kernel", { timeout: 900_000 }, async (t) => {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.test.js'))
    .map((f) => path.join(dir, f))
    .sort();
  if (files.length === 0) throw new Error(`no guest tests under ${dir}`);
  await runGuestSuite(t, files, { cwd: path.resolve(__dirname, '..', '..', '..') });
});
