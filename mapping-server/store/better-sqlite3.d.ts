/**
 * The part of better-sqlite3's API the store uses. Declared here instead of adding @types/better-sqlite3:
 * the project takes one dependency for the store, and these few lines are all it touches.
 */
declare module 'better-sqlite3' {
  interface RunResult {
    changes: number;
    lastInsertRowid: number | bigint;
  }
  interface Statement<Row = unknown> {
    run(...params: unknown[]): RunResult;
    get(...params: unknown[]): Row | undefined;
    all(...params: unknown[]): Row[];
    iterate(...params: unknown[]): IterableIterator<Row>;
    raw(toggle?: boolean): this;
  }
  interface Options {
    readonly?: boolean;
    fileMustExist?: boolean;
    timeout?: number;
  }
  class Database {
    constructor(filename: string, options?: Options);
    prepare<Row = unknown>(sql: string): Statement<Row>;
    exec(sql: string): this;
    pragma(source: string, options?: { simple?: boolean }): unknown;
    transaction<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R;
    close(): this;
    /** SQLite's online backup to a new file (`realmnet rm backup`); resolves when it is complete. */
    backup(destination: string): Promise<{ totalPages: number; remainingPages: number }>;
    readonly open: boolean;
    readonly inTransaction: boolean;
  }
  export default Database;
}
