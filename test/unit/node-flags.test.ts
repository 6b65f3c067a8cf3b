// cnmd runs with CNMD_NODE_FLAGS however it is started: cnmd.js's #! line (npm's bin)
// and bin/cnmd (README's quick start links it into /usr/local/bin) pass them too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CNMD_NODE_FLAGS } from '../../src/cli/node-flags';

const REPO = path.resolve(__dirname, '..', '..', '..');

test('cnmd.ts #! line and bin/cnmd pass the V8 flags of node-flags.ts', () => {
  const shebang = fs.readFileSync(path.join(REPO, 'src', 'cli', 'cnmd.ts'), 'utf8').split('\n')[0];
  const wrapper = fs
    .readFileSync(path.join(REPO, 'bin', 'cnmd'), 'utf8')
    .split('\n')
    .find((l) => l.startsWith('exec node'));
  assert.ok(wrapper, 'bin/cnmd execs node');
  for (const flag of CNMD_NODE_FLAGS) {
    assert.ok(shebang.split(/\s+/).includes(flag), `src/cli/cnmd.ts #! line lacks ${flag}: ${shebang}`);
    assert.ok(wrapper.split(/\s+/).includes(flag), `bin/cnmd lacks ${flag}: ${wrapper}`);
  }
});
