// The store seam: typed records by kind and id, with transactions. Every
// controller mutation runs in one transaction, so a daemon killed at any
// instant leaves either the old record set or the new one.

export interface Store {
  get<T>(kind: string, id: string): T | undefined;
  put<T>(kind: string, id: string, value: T): void;
  /** Writes a new record; false (and nothing written) when one with that id exists already. */
  add<T>(kind: string, id: string, value: T): boolean;
  /** False when there was nothing to delete. */
  delete(kind: string, id: string): boolean;
  list<T>(kind: string): T[];
  /** Runs fn atomically; nested calls join the outer transaction. A throw rolls back. */
  tx<T>(fn: () => T): T;
  close(): void;
}
