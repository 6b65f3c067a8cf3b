// The cluster flags: parsed and checked before anything starts, each with what to write instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveConfig } from '../../../src/config';
import { parseClusterStore } from '../../../src/cluster/etcd';

test('cluster flags: defaults, flag over env, ranges refused with what to write', () => {
  const d = resolveConfig({}, {});
  assert.equal(d.clusterStore, '');
  assert.equal(d.clusterTtl, 10);
  assert.equal(d.vxlanPort, 4789);
  const c = resolveConfig(
    { clusterStore: 'etcd://10.0.0.1:2379', clusterTtl: '5' },
    { CNMD_CLUSTER_TTL: '30', CNMD_VXLAN_PORT: '8472', CNMD_CLUSTER_ADVERTISE: 'eth1' },
  );
  assert.equal(c.clusterTtl, 5);
  assert.equal(c.vxlanPort, 8472);
  assert.equal(c.clusterAdvertise, 'eth1');
  assert.throws(
    () => resolveConfig({ clusterTtl: '1' }, {}),
    /--cluster-ttl "1" is not a whole number of seconds from 2 to 3600/,
  );
  assert.throws(
    () => resolveConfig({ vxlanPort: '80' }, {}),
    /--vxlan-port "80" is not a UDP port from 1024 to 49151/,
  );
  assert.throws(
    () => resolveConfig({ clusterStore: 'http://x:2379' }, {}),
    /--cluster-store .* is not etcd:\/\/HOST:PORT/,
  );
  assert.throws(
    () => resolveConfig({ clusterAdvertise: 'eth0' }, {}),
    /--cluster-advertise needs --cluster-store/,
  );
  assert.throws(
    () => resolveConfig({ clusterStoreCert: '/x' }, {}),
    /--cluster-store-cert needs --cluster-store/,
  );
});

test('etcd:// endpoints: one or several members, http or https by TLS; anything else refused', () => {
  assert.deepEqual(parseClusterStore('etcd://10.0.0.1:2379', false), ['http://10.0.0.1:2379']);
  assert.deepEqual(parseClusterStore('etcd://h1:2379,h2:2379', true), ['https://h1:2379', 'https://h2:2379']);
  assert.deepEqual(parseClusterStore('etcd://[fd00::1]:2379', false), ['http://[fd00::1]:2379']);
  for (const bad of [
    'etcd://',
    'etcd://h1',
    'etcd://h1:0',
    'etcd://h1:99999',
    'consul://h1:8500',
    'etcd://h 1:2379',
  ])
    assert.throws(() => parseClusterStore(bad, false), /is not etcd:\/\/HOST:PORT/, bad);
});

test('--cluster-secret-file: needs --cluster-store; a missing or short file stops the daemon before it starts', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-secret-cfg-'));
  try {
    const f = path.join(dir, 'secret');
    assert.throws(
      () => resolveConfig({ clusterSecretFile: f }, {}),
      /--cluster-secret-file needs --cluster-store/,
    );
    const store = { clusterStore: 'etcd://10.0.0.1:2379' };
    assert.throws(
      () => resolveConfig({ ...store, clusterSecretFile: f }, {}),
      /--cluster-secret-file .*secret: cannot be read \(ENOENT\)/,
    );
    fs.writeFileSync(f, 'short');
    assert.throws(
      () => resolveConfig({ ...store }, { CNMD_CLUSTER_SECRET_FILE: f }),
      /holds 5 bytes; it needs at least 32/,
    );
    fs.writeFileSync(f, Buffer.alloc(48, 3));
    assert.equal(resolveConfig({ ...store, clusterSecretFile: f }, {}).clusterSecretFile, f);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--encryption-key-rotation: 12h by default, durations in s/m/h/d or bare seconds, nonsense refused', () => {
  assert.equal(resolveConfig({}, {}).encryptionKeyRotation, 12 * 3600);
  assert.equal(resolveConfig({ encryptionKeyRotation: '3s' }, {}).encryptionKeyRotation, 3);
  assert.equal(resolveConfig({}, { CNMD_ENCRYPTION_KEY_ROTATION: '30m' }).encryptionKeyRotation, 1800);
  assert.equal(resolveConfig({ encryptionKeyRotation: '90' }, {}).encryptionKeyRotation, 90);
  assert.equal(resolveConfig({ encryptionKeyRotation: '7d' }, {}).encryptionKeyRotation, 7 * 86400);
  for (const bad of ['1s', '0', '12 h', '1.5h', 'h', '-5s', '400d', '12hours'])
    assert.throws(
      () => resolveConfig({ encryptionKeyRotation: bad }, {}),
      /--encryption-key-rotation ".*" is not a duration from 2s to 365d \(e\.g\. 12h, 30m, 90s\)/,
      bad,
    );
});
