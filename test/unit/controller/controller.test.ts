// The controller's logic without root: rollback of a failed create, teardown
// that carries on through failures and reports them together, and the
// driver seam's capability flags, against recording fakes (fakes.ts), the
// real SQLite store and real sandbox files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EMBEDDED_DNS_OPTION } from '../../../src/controller/dns-view';
import { KIND } from '../../../src/controller/records';
import { CnmdError } from '../../../src/errors';
import { StepError } from '../../../src/steps';
import { FakeDriver, controllerWith } from './fakes';

const NO_DNS = { [EMBEDDED_DNS_OPTION]: 'false' };

test('network create: a driver failure undoes the IPAM pool and gateway and leaves no record; the error is the driver’s, with its step', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller, store, ipam } = controllerWith(t, [drv]);
  drv.failures.createNetwork = 'KERNEL_ERROR';
  const err = await controller.createNetwork({ name: 'n1', driver: 'plain' }).then(
    () => assert.fail('create succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof StepError, 'a StepError');
  assert.equal(err.step, 'driver');
  assert.equal(err.code, 'KERNEL_ERROR', 'the original code, for the API status');
  assert.equal(err.message, 'createNetwork: injected KERNEL_ERROR', 'the original message');
  assert.ok(err.cause instanceof CnmdError && err.cause.code === 'KERNEL_ERROR', 'the original in cause');
  assert.deepEqual(ipam.holding(), [], 'pool and gateway released');
  assert.deepEqual(
    ipam.calls.filter((c) => c.startsWith('release')),
    ['releaseAddress pool-10.1.0.0/24 10.1.0.1/24', 'releasePool pool-10.1.0.0/24'],
  );
  assert.deepEqual(drv.of('deleteNetwork').length, 1, "the failed step's partial work is undone too");
  assert.deepEqual(store.list(KIND.network), [], 'no record, not even a creating one');

  drv.failures = {};
  const n = await controller.createNetwork({ name: 'n1', driver: 'plain' });
  assert.equal(n.state, 'ready', 'the name is free again');
});

test('network create: an IPAM failure after the pool releases the pool and never reaches the driver', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller, store, ipam } = controllerWith(t, [drv]);
  ipam.failures.requestAddress = 'EXHAUSTED';
  await assert.rejects(controller.createNetwork({ name: 'n1', driver: 'plain' }), { code: 'EXHAUSTED' });
  assert.deepEqual(ipam.holding(), []);
  assert.deepEqual(drv.calls, []);
  assert.deepEqual(store.list(KIND.network), []);
});

test('sandbox delete: every teardown step runs through failures; the failures come back together, the records go', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller, store, ipam, netns, files, logs } = controllerWith(t, [drv]);
  await controller.createNetwork({ name: 'a', driver: 'plain', options: NO_DNS });
  await controller.createNetwork({ name: 'b', driver: 'plain', options: NO_DNS });
  const sb = await controller.createSandbox({ name: 'box', networks: [{ network: 'a' }, { network: 'b' }] });
  assert.equal(sb.endpoints.length, 2);
  const handle = netns.handles[0];
  drv.failures = { revokeExternalConnectivity: 'KERNEL_ERROR', leave: 'TIMEOUT' };

  const err = await controller.deleteSandbox('box').then(
    () => assert.fail('delete succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CnmdError);
  assert.equal(err.code, 'KERNEL_ERROR', "the first failure's code");
  assert.match(err.message, /^sandbox rm box: revoke external connectivity: .*; leave: .*TIMEOUT/);
  assert.ok(
    err.cause instanceof AggregateError && err.cause.errors.length === 4,
    'two steps x two endpoints',
  );
  assert.equal(
    logs.filter((l) => l.msg === 'teardown step failed').length,
    4,
    'each failure logged as it happened',
  );
  assert.equal(drv.of('deleteEndpoint').length, 2, 'the steps after the failing ones still ran');
  assert.deepEqual(
    ipam.holding().filter((h) => h.includes(' ') && !h.endsWith('.1')),
    [],
    'endpoint addresses released (the gateways stay with their networks)',
  );
  assert.deepEqual(store.list(KIND.sandbox), []);
  assert.deepEqual(store.list(KIND.endpoint), []);
  assert.ok(!netns.exists(sb.id), 'the namespace went first');
  assert.ok(handle.closed, "the sandbox's netlink handle is closed (LiveSandbox.close)");
  assert.ok(!fs.existsSync(files.dir(sb.id)), 'its files went');

  drv.failures = {};
  await controller.createSandbox({ name: 'box', networks: [{ network: 'a' }] });
});

test('sandbox delete: NOT_FOUND from a teardown step is done, not a failure', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller, store, logs, netns } = controllerWith(t, [drv]);
  await controller.createNetwork({ name: 'a', driver: 'plain', options: NO_DNS });
  const sb = await controller.createSandbox({ name: 'box', networks: [{ network: 'a' }] });
  drv.failures = { leave: 'NOT_FOUND' };
  netns.live.delete(sb.id); // the namespace vanished already: remove() says NOT_FOUND
  await controller.deleteSandbox('box');
  assert.deepEqual(store.list(KIND.sandbox), []);
  assert.equal(logs.filter((l) => l.msg === 'teardown step failed').length, 0);
});

test('sandbox create: a join failure on the second network undoes the first endpoint, the addresses, the netns and the name', async (t) => {
  const ok = new FakeDriver('ok');
  const bad = new FakeDriver('bad');
  const { controller, store, ipam, netns } = controllerWith(t, [ok, bad]);
  await controller.createNetwork({ name: 'a', driver: 'ok', options: NO_DNS });
  await controller.createNetwork({ name: 'b', driver: 'bad', options: NO_DNS });
  const gateways = ipam.holding();
  bad.failures.join = 'KERNEL_ERROR';
  await assert.rejects(
    controller.createSandbox({ name: 'box', networks: [{ network: 'a' }, { network: 'b' }] }),
    (e: unknown) => e instanceof StepError && e.step === 'join' && e.code === 'KERNEL_ERROR',
  );
  assert.deepEqual(
    ok.calls.map((c) => c.split(' ')[0]),
    [
      'createNetwork',
      'createEndpoint',
      'join',
      'programExternalConnectivity',
      'revokeExternalConnectivity',
      'leave',
      'deleteEndpoint',
    ],
  );
  assert.deepEqual(
    bad.calls.map((c) => c.split(' ')[0]),
    ['createNetwork', 'createEndpoint', 'join', 'leave', 'deleteEndpoint'],
  );
  assert.deepEqual(ipam.holding(), gateways, 'only the networks’ gateways are held');
  assert.deepEqual(store.list(KIND.sandbox), []);
  assert.deepEqual(store.list(KIND.endpoint), []);
  assert.deepEqual(netns.list(), [], 'the netns made for it is deleted');
  assert.ok(netns.handles[0].closed);
  bad.failures = {};
  await controller.createSandbox({ name: 'box', networks: [{ network: 'a' }, { network: 'b' }] });
});

test('default route: through the first endpoint with a gateway; moves to the next when it leaves', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller, netns } = controllerWith(t, [drv]);
  await controller.createNetwork({ name: 'a', driver: 'plain', options: NO_DNS });
  await controller.createNetwork({ name: 'b', driver: 'plain', options: NO_DNS });
  await controller.createSandbox({ name: 'box', networks: [{ network: 'a' }, { network: 'b' }] });
  const h = netns.handles[0];
  assert.deepEqual(h.calls, ['routeReplace 10.1.0.1 eth0'], 'one route, no read-back of a new netns');
  await controller.disconnect('a', 'box');
  assert.deepEqual(h.calls.slice(1), ['routeReplace 10.2.0.1 eth1']);
  await controller.disconnect('b', 'box');
  assert.deepEqual(h.calls.slice(2), ['routeDel 4']);
});

test('seam flags: needsIpam=false takes no pool, embeddedDns=false has no DNS, usesHostNetns joins the daemon netns, singleton refuses a second network', async (t) => {
  const host = new FakeDriver('hostlike', {
    scope: 'local',
    singleton: true,
    usesHostNetns: true,
    needsIpam: false,
    embeddedDns: false,
  });
  const plain = new FakeDriver('plain');
  const { controller, ipam, netns, files } = controllerWith(t, [host, plain]);
  const h = await controller.createNetwork({ name: 'h', driver: 'hostlike' });
  assert.deepEqual(h.pools, []);
  assert.deepEqual(ipam.calls, [], 'no IPAM call at all');
  assert.equal(controller.dnsEnabled(h), false);
  const p = await controller.createNetwork({ name: 'p', driver: 'plain' });
  assert.equal(controller.dnsEnabled(p), true, 'a driver that says nothing gets the embedded DNS');
  await assert.rejects(controller.createNetwork({ name: 'h2', driver: 'hostlike' }), {
    code: 'FORBIDDEN',
    message: 'only one instance of "hostlike" network is allowed',
  });

  const sb = await controller.createSandbox({ name: 'box', networks: [{ network: 'h' }] });
  assert.equal(sb.hostNetns, true);
  assert.equal(sb.key, netns.pathOf('default'), 'the pinned daemon netns');
  assert.deepEqual(netns.calls, ['pin default'], 'no namespace of its own');
  assert.equal(controller.dns.has(sb.id), false, 'no resolver');
  const resolv = fs.readFileSync(path.join(files.dir(sb.id), 'resolv.conf'), 'utf8');
  assert.match(resolv, /nameserver 192\.0\.2\.53/, "the host's servers, not 127.0.0.11");
  assert.deepEqual(controller.networksOf(sb.id), []);
  await assert.rejects(controller.connect('p', 'box'), {
    code: 'INVALID_ARGUMENT',
    message: /container sharing network namespace with another container or host cannot be connected/,
  });
});

test('network prune: a network joined between the listing and its removal is skipped (IN_USE), the others go', async (t) => {
  const drv = new FakeDriver('plain');
  const { controller } = controllerWith(t, [drv]);
  for (const name of ['a', 'b', 'c'])
    await controller.createNetwork({ name, driver: 'plain', options: NO_DNS });
  await controller.createSandbox({ name: 'box' });
  let joined: Promise<unknown> | undefined;
  const removed = await controller.pruneNetworks(() => {
    // At the first network matched (b's turn included), the connect takes b's lock before the prune's removal of b asks for it.
    joined ??= controller.connect('b', 'box');
    return true;
  });
  await joined;
  assert.deepEqual(removed.sort(), ['a', 'c']);
  await assert.rejects(controller.deleteNetwork('b'), {
    code: 'IN_USE',
    message: /^error while removing network: network b id [0-9a-f]{64} has active endpoints$/,
  });
  assert.deepEqual(
    controller
      .networks()
      .map((n) => n.name)
      .filter((x) => ['a', 'b', 'c'].includes(x)),
    ['b'],
  );
});
