// The SQLite store's WAL checkpoints: never inside an API call's commit, once
// the daemon pauses. Observed from outside: the database file itself only
// grows when the WAL is copied into it.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteStore } from '../../../src/store/sqlite';
import { eventually } from '../../lib/fixture';

/** A store in a directory of its own, removed after the test; `before`: the database file's size at the start. */
function freshStore(t: TestContext): { store: SqliteStore; dbFile: string; before: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-store-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = new SqliteStore(dir);
  t.after(() => store.close());
  const dbFile = path.join(dir, 'cnmd.db');
  return { store, dbFile, before: fs.statSync(dbFile).size };
}

test('commits leave the WAL alone (no checkpoint at 1000 pages inside a commit); it is checkpointed once commits pause', async (t) => {
  const { store, dbFile, before } = freshStore(t);
  const value = 'x'.repeat(16 * 1024);
  // ~6 MB in 400 commits: SQLite's automatic checkpoint would have run several times.
  for (let i = 0; i < 400; i++) store.tx(() => store.put('blob', `k${i}`, { i, value }));
  assert.equal(fs.statSync(dbFile).size, before, 'the database file is untouched while commits keep coming');
  assert.ok(fs.statSync(`${dbFile}-wal`).size > 4 * 1024 * 1024, 'everything is in the WAL');
  await eventually(
    () =>
      assert.ok(
        fs.statSync(dbFile).size > 4 * 1024 * 1024,
        'checkpointed into the database file after the pause',
      ),
    5000,
  );
  assert.equal(store.list<{ i: number }>('blob').length, 400);
  assert.equal(store.get<{ i: number; value: string }>('blob', 'k399')?.i, 399);
});

test('a put or delete outside a transaction counts as a commit too', async (t) => {
  const { store, dbFile, before } = freshStore(t);
  const value = 'y'.repeat(64 * 1024);
  for (let i = 0; i < 20; i++) store.put('blob', `k${i}`, { value });
  assert.equal(store.delete('blob', 'k0'), true);
  assert.equal(fs.statSync(dbFile).size, before);
  await eventually(
    () => assert.ok(fs.statSync(dbFile).size > 1024 * 1024, 'checkpointed after the pause'),
    5000,
  );
  assert.equal(store.get('blob', 'k0'), undefined);
});

test('add writes a new record and refuses to overwrite an existing one', (t) => {
  const { store } = freshStore(t);
  assert.equal(store.add('k', 'a', { v: 1 }), true);
  assert.equal(store.add('k', 'a', { v: 2 }), false);
  assert.deepEqual(store.get('k', 'a'), { v: 1 }, 'the first record is kept');
  // Inside a transaction too, and a rollback takes the add back.
  assert.throws(() =>
    store.tx(() => {
      assert.equal(store.add('k', 'b', { v: 3 }), true);
      assert.equal(store.add('k', 'a', { v: 4 }), false);
      throw new Error('roll back');
    }),
  );
  assert.equal(store.get('k', 'b'), undefined);
  assert.deepEqual(store.get('k', 'a'), { v: 1 });
});
