// The embedded store: SQLite through better-sqlite3 in WAL mode under --data-root.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { Store } from './store';

export class SqliteStore implements Store {
  readonly file: string;
  private db: Database.Database;
  private stmts: {
    get: Database.Statement;
    put: Database.Statement;
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
    this.db.exec(`CREATE TABLE IF NOT EXISTS objects (
      kind TEXT NOT NULL,
      id TEXT NOT NULL,
      value TEXT NOT NULL,
      PRIMARY KEY (kind, id)
    ) WITHOUT ROWID`);
    this.stmts = {
      get: this.db.prepare('SELECT value FROM objects WHERE kind = ? AND id = ?'),
      put: this.db.prepare('INSERT INTO objects (kind, id, value) VALUES (?, ?, ?) ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value'),
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
  }

  delete(kind: string, id: string): boolean {
    return this.stmts.del.run(kind, id).changes > 0;
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
      return out;
    } catch (e) {
      if (this.db.inTransaction) this.stmts.rollback.run();
      throw e;
    }
  }

  close(): void {
    this.db.close();
  }
}
