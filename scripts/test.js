#!/usr/bin/env node
// Runs one test lane (unit | integration | chaos | kernel | engine | cluster) or all of them with
// node's built-in runner, on the compiled files under dist/test/<lane>/.
// A lane with no test files fails: a lane must never pass by running nothing.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const LANES = ['unit', 'integration', 'chaos', 'kernel', 'engine', 'cluster'];
const root = path.resolve(__dirname, '..');
const wanted = process.argv[2] || 'all';
const lanes = wanted === 'all' ? LANES : [wanted];

function files(lane) {
  const dir = path.join(root, 'dist', 'test', lane);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true })
    .filter((f) => String(f).endsWith('.test.js'))
    .map((f) => path.join(dir, String(f)))
    .sort();
}

let failed = false;
for (const lane of lanes) {
  if (!LANES.includes(lane)) {
    console.error(`unknown lane "${lane}"; lanes: ${LANES.join(', ')}, all`);
    process.exit(2);
  }
  const list = files(lane);
  if (list.length === 0) {
    console.error(`lane ${lane}: no test files under dist/test/${lane} (did "npm run build" run?)`);
    failed = true;
    continue;
  }
  if (lane !== 'unit' && process.getuid && process.getuid() !== 0) {
    console.error(`lane ${lane}: needs root (network namespaces); run as root`);
    failed = true;
    continue;
  }
  require('./host-packages').ensure([lane]);
  console.log(`\n=== lane ${lane}: ${list.length} files ===`);
  // kernel: one VM at a time; engine: one dockerd at a time; cluster: one etcd and its daemons at a time
  // (each is heavy, and their timings are read).
  const serial = lane === 'kernel' || lane === 'engine' || lane === 'cluster';
  const args = ['--test', '--test-reporter=spec', `--test-concurrency=${serial ? 1 : 2}`, ...list];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
