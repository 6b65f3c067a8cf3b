// The embedded store: SQLite through better-sqlite3 in WAL mode under --data-root.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { Store } from './store';

/** Quiet time after the last commit before the WAL is checkpointed. */
const CHECKPOINT_IDLE_MS = 250;
/** Commits after which a checkpoint runs inline if the daemon was never idle (bounds the WAL). */
const MAX_COMMITS_UNCHECKPOINTED = 2000;

export class SqliteStore implements Store {
  readonly file: string;
  private db: Database.Database;
  private commitsSinceCheckpoint = 0;
  private checkpointTimer?: NodeJS.Timeout;
  private stmts: {
    get: Database.Statement;
    put: Database.Statement;
    add: Database.Statement;
    del: Database.Statement;
    list: Database.Statement;
    begin: Database.Statement;
    commit: Database.Statement;
    rollback: Database.Statement;
  };

  constructor(dataRoot: string) {
    fs.mkdirSync(dataRoot, { recursive: true, mode: 0o700 });
    this.file = path.join(dataRoot, 'cnmd.db');
    this.db = new Database(this.file);
    this.db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: every commit is atomic and survives a killed process
    // (what recovery needs); an OS crash may lose the last commits, and with them
    // the kernel state they described is gone too (netns live on tmpfs). FULL
    // would add an fsync to every API call.
    this.db.pragma('synchronous = NORMAL');
    // SQLite checkpoints the WAL into the database inside a commit once it
    // holds 1000 pages: with fsyncs, ~5-10 ms added to every ~25th API call.
    // Checkpoints run when the daemon is idle instead (checkpointSoon), and
    // inline only after MAX_COMMITS_UNCHECKPOINTED commits without a pause.
    this.db.pragma('wal_autocheckpoint = 0');
    this.db.exec(`CREATE TABLE IF NOT EXISTS objects (
      kind TEXT NOT NULL,
      id TEXT NOT NULL,
      value TEXT NOT NULL,
      PRIMARY KEY (kind, id)
    ) WITHOUT ROWID`);
    this.stmts = {
      get: this.db.prepare('SELECT value FROM objects WHERE kind = ? AND id = ?'),
      put: this.db.prepare(
        'INSERT INTO objects (kind, id, value) VALUES (?, ?, ?) ON CONFLICT (kind, id) DO UPDATE SET value ' +
          '= excluded.value',
      ),
      add: this.db.prepare(
        'INSERT INTO objects (kind, id, value) VALUES (?, ?, ?) ON CONFLICT (kind, id) DO NOTHING',
      ),
      del: this.db.prepare('DELETE FROM objects WHERE kind = ? AND id = ?'),
      list: this.db.prepare('SELECT value FROM objects WHERE kind = ? ORDER BY id'),
      begin: this.db.prepare('BEGIN IMMEDIATE'),
      commit: this.db.prepare('COMMIT'),
      rollback: this.db.prepare('ROLLBACK'),
    };
  }

  get<T>(kind: string, id: string): T | undefined {
    const row = this.stmts.get.get(kind, id) as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  put<T>(kind: string, id: string, value: T): void {
    this.stmts.put.run(kind, id, JSON.stringify(value));
    if (!this.db.inTransaction) this.committed();
  }

  add<T>(kind: string, id: string, value: T): boolean {
    const added = this.stmts.add.run(kind, id, JSON.stringify(value)).changes > 0;
    if (added && !this.db.inTransaction) this.committed();
    return added;
  }

  delete(kind: string, id: string): boolean {
    const gone = this.stmts.del.run(kind, id).changes > 0;
    if (!this.db.inTransaction) this.committed();
    return gone;
  }

  /** A commit happened: checkpoint once the daemon pauses, or now if it has not for long. */
  private committed(): void {
    if (++this.commitsSinceCheckpoint >= MAX_COMMITS_UNCHECKPOINTED) {
      this.checkpoint();
      return;
    }
    if (this.checkpointTimer) this.checkpointTimer.refresh();
    else {
      this.checkpointTimer = setTimeout(() => {
        this.checkpointTimer = undefined;
        this.checkpoint();
      }, CHECKPOINT_IDLE_MS);
      this.checkpointTimer.unref();
    }
  }

  /** Copies the WAL into the database file (PASSIVE: never waits for a reader). */
  checkpoint(): void {
    this.commitsSinceCheckpoint = 0;
    if (this.db.open) this.db.pragma('wal_checkpoint(PASSIVE)');
  }

  list<T>(kind: string): T[] {
    return (this.stmts.list.all(kind) as { value: string }[]).map((r) => JSON.parse(r.value) as T);
  }

  tx<T>(fn: () => T): T {
    // Nested: a savepoint, so an inner failure caught by the caller undoes only its own writes.
    if (this.db.inTransaction) return this.db.transaction(fn)();
    // The outer one on prepared statements: db.transaction() builds its wrappers
    // anew for every call, which two commits per API call paid for each time.
    this.stmts.begin.run();
    try {
      const out = fn();
      if (out instanceof Promise) throw new TypeError('Transaction function cannot return a promise');
      this.stmts.commit.run();
      this.committed();
      return out;
    } catch (e) {
      if (this.db.inTransaction) this.stmts.rollback.run();
      throw e;
    }
  }

  close(): void {
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    this.db.close();
  }
}
