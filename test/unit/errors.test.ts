// The error policy's helpers (docs/errors.md): NOT_FOUND ignored by name,
// teardown failures collected and reported together, `op object: reason`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CnmdError,
  TeardownErrors,
  bestEffort,
  errnoOf,
  failure,
  hasErrno,
  ignoreNotFound,
} from '../../src/errors';

const err = (code: 'NOT_FOUND' | 'KERNEL_ERROR' | 'TIMEOUT', m: string) =>
  new CnmdError(code, m, { op: 'x' });

test('ignoreNotFound: NOT_FOUND resolves undefined; every other failure rejects as it was', async () => {
  assert.equal(await ignoreNotFound(Promise.resolve(3)), 3);
  assert.equal(await ignoreNotFound(Promise.reject(err('NOT_FOUND', 'gone'))), undefined);
  const eperm = err('KERNEL_ERROR', 'EPERM');
  await assert.rejects(ignoreNotFound(Promise.reject(eperm)), (e) => e === eperm);
  const bug = new TypeError('x is undefined');
  await assert.rejects(ignoreNotFound(Promise.reject(bug)), (e) => e === bug, 'a bug is not swallowed');
});

test('TeardownErrors: every step runs; NOT_FOUND is done; the rest are logged once and thrown together', async () => {
  const warned: unknown[] = [];
  const errs = new TeardownErrors('sandbox rm', 'box', { warn: (f) => void warned.push(f) });
  const ran: string[] = [];
  await errs.step('a', () => {
    ran.push('a');
    throw err('KERNEL_ERROR', 'EPERM on a');
  });
  await errs.step('b', async () => {
    ran.push('b');
    throw err('NOT_FOUND', 'b gone');
  });
  await errs.step('c', async () => {
    ran.push('c');
    throw err('TIMEOUT', 'c timed out');
  });
  assert.deepEqual(ran, ['a', 'b', 'c']);
  assert.equal(warned.length, 2);
  assert.throws(
    () => errs.throwIfFailed(),
    (e: unknown) =>
      e instanceof CnmdError &&
      e.code === 'KERNEL_ERROR' &&
      e.message === 'sandbox rm box: a: EPERM on a; c: c timed out' &&
      e.cause instanceof AggregateError &&
      e.cause.errors.length === 2,
  );
  new TeardownErrors('op', 'o').throwIfFailed(); // nothing failed: no throw
});

test('TeardownErrors: a nested teardown’s failures are flattened into the outer list, not logged twice', async () => {
  const warned: unknown[] = [];
  const log = { warn: (f: unknown) => void warned.push(f) };
  const outer = new TeardownErrors('network rm', 'n', log);
  await outer.step('pools', () => {
    const inner = new TeardownErrors('pool release', '10.0.0.0/24', log);
    inner.add('release gateway', err('KERNEL_ERROR', 'g'));
    inner.add('release pool', err('TIMEOUT', 'p'));
    inner.throwIfFailed();
  });
  assert.deepEqual(
    outer.failures.map((f) => f.step),
    ['release gateway', 'release pool'],
  );
  assert.equal(warned.length, 2);
});

test('bestEffort: logs a failure instead of throwing it; failure(): op object: reason', async () => {
  const warned: unknown[] = [];
  await bestEffort({ warn: (f) => void warned.push(f) }, 'veth rollback', 'veth1', () => {
    throw err('KERNEL_ERROR', 'EBUSY');
  });
  assert.equal(warned.length, 1);
  assert.equal(
    failure('CONFLICT', { op: 'network create', object: 'br0' }, 'in use').message,
    'network create br0: in use',
  );
  assert.equal(failure('CONFLICT', { op: 'network create' }, 'in use').message, 'network create: in use');
});

test('errnoOf/hasErrno: the errno name of node, native and CnmdError failures; nothing for others', async () => {
  const nodeErr = await import('node:fs').then((fs) => {
    try {
      fs.readFileSync('/nonexistent/cnmd-errno-test');
    } catch (e) {
      return e;
    }
    return undefined;
  });
  assert.equal(errnoOf(nodeErr), 'ENOENT');
  assert.equal(hasErrno(nodeErr, 'EPERM', 'ENOENT'), true);
  assert.equal(hasErrno(nodeErr, 'EPERM'), false);
  assert.equal(errnoOf(new CnmdError('KERNEL_ERROR', 'x', { op: 'x', errno: 'EBUSY' })), 'EBUSY');
  // A CnmdError's own code is not an errno.
  assert.equal(errnoOf(err('NOT_FOUND', 'gone')), undefined);
  assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'ERR_INVALID_ARG_TYPE' })), undefined);
  assert.equal(errnoOf(new TypeError('a bug')), undefined);
  assert.equal(errnoOf(undefined), undefined);
  assert.equal(hasErrno(null, 'ENOENT'), false);
});
