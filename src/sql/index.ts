/**
 * effect-batch's stores in SQL tables, through any `@effect/sql` client
 * (SQLite or PostgreSQL): `SqlCheckpointStore`, the durable record of runs,
 * and `SqlResultCache`, answers kept across runs.
 *
 * Needs `@effect/sql` and a driver of your choice (e.g.
 * `@effect/sql-sqlite-node`, `@effect/sql-pg`), on top of the core
 * (`effect-batch`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as SqlCheckpointStore from "./SqlCheckpointStore.js"
/** @since 0.1.0 */
export * as SqlResultCache from "./SqlResultCache.js"
