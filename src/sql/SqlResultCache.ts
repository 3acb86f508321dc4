/**
 * A `ResultCache` in a SQL table, through whatever `SqlClient` is provided:
 * SQLite (3.24 or later) or PostgreSQL (9.5 or later), so that answers
 * survive the process and are shared by every process on the database.
 *
 * Building the layer creates the table if it is missing; values are the JSON
 * text `ResultCache.encodeValue` writes, so they come back as from any other
 * backend. `@effect/sql` is loaded only when the store is built.
 *
 * What it does not promise: entries never expire, and it is not a lock (see
 * `ResultCache`); the table is not versioned: a table of that name with
 * other columns fails the first query, not the build.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ResultCache from "../ResultCache.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The table, created if missing. A plain identifier: letters, digits and
   * `_`, not starting with a digit, at most 63 characters (PostgreSQL would
   * silently cut a longer name). Default `"effect_batch_result_cache"`.
   */
  readonly table?: string | undefined
}

const identifier = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

// SQLite allows 999 bound parameters per statement before 3.32.
const keysPerQuery = 500

// Loaded when a SQL store is built, so that importing this module (or the package) does not need @effect/sql.
const loadSql = Effect.tryPromise({
  try: () => Promise.all([import("@effect/sql/SqlClient"), import("@effect/sql/SqlError")]),
  catch: (cause) => new Cause.RuntimeException(`SqlResultCache.layer needs the package @effect/sql: ${String(cause)}`)
}).pipe(Effect.orDie)

/**
 * A store in a SQL table, through whatever `SqlClient` is provided: SQLite
 * (3.24 or later) or PostgreSQL (9.5 or later); other dialects fail to build.
 * The table holds `key TEXT PRIMARY KEY`, `value TEXT` (the JSON) and
 * `created_at` (when the value was written; a `TIMESTAMPTZ` on PostgreSQL,
 * ISO-8601 UTC text on SQLite). Names go to the database as given: the
 * client's name transforms are switched off with `withoutTransforms()`
 * (which `@effect/sql` 0.52 ignores on a client that transforms query names
 * but not result names; the store then works under the transformed names).
 * `@effect/sql` is loaded only when a SQL store is built, so the memory
 * store works without it.
 *
 * Throws `IllegalArgumentException` for a table name that is not a plain
 * identifier.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<ResultCache.Store, SqlError.SqlError, SqlClient.SqlClient> => {
  const table = options.table ?? "effect_batch_result_cache"
  if (!identifier.test(table)) {
    throw new Cause.IllegalArgumentException(
      "SqlResultCache.layer: table must be a plain identifier (letters, digits, _; not starting with a digit; " +
        `at most 63 characters), got ${JSON.stringify(table)}`
    )
  }
  return Effect.gen(function*() {
    const [{ SqlClient: ClientTag }, { SqlError: SqlFailure }] = yield* loadSql
    const sql = (yield* ClientTag).withoutTransforms()
    const createdAt = yield* sql.onDialectOrElse({
      sqlite: () => Effect.succeed(sql.literal("TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")),
      pg: () => Effect.succeed(sql.literal("TIMESTAMPTZ NOT NULL DEFAULT now()")),
      orElse: () => Effect.fail(new SqlFailure({ message: "SqlResultCache.layer supports only SQLite and PostgreSQL clients" }))
    })
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(table)} (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at ${createdAt})`

    const failed = (operation: ResultCache.Operation, key?: string) => (cause: SqlError.SqlError) =>
      new ResultCache.ResultCacheError(key === undefined ? { operation, cause } : { operation, key, cause })

    return {
      get: (key) =>
        sql<{ readonly value: string }>`SELECT value FROM ${sql(table)} WHERE key = ${key}`.pipe(
          Effect.mapError(failed("get", key)),
          Effect.flatMap((rows) => rows.length === 0 ? Effect.succeedNone : Effect.asSome(ResultCache.decodeValue("get", key, rows[0]!.value)))
        ),
      getMany: (keys) =>
        Effect.gen(function*() {
          const unique = Array.from(new Set(keys))
          const found = new Map<string, unknown>()
          for (let i = 0; i < unique.length; i += keysPerQuery) {
            const chunk = sql.in("key", unique.slice(i, i + keysPerQuery))
            const rows = yield* sql<{ readonly key: string, readonly value: string }>`SELECT key, value FROM ${sql(table)} WHERE ${chunk}`
              .pipe(Effect.mapError(failed("getMany")))
            for (const row of rows) found.set(row.key, yield* ResultCache.decodeValue("getMany", row.key, row.value))
          }
          return found
        }),
      set: (key, value) =>
        Effect.gen(function*() {
          const json = yield* ResultCache.encodeValue("set", key, value)
          yield* sql`INSERT INTO ${sql(table)} (key, value) VALUES (${key}, ${json})
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, created_at = excluded.created_at`
            .pipe(Effect.mapError(failed("set", key)))
        }),
      delete: (key) => sql`DELETE FROM ${sql(table)} WHERE key = ${key}`.pipe(Effect.mapError(failed("delete", key)), Effect.asVoid),
      // count(*) is a number on SQLite, a string on PostgreSQL (bigint), a bigint with SafeIntegers.
      size: sql<{ readonly n: number | string | bigint }>`SELECT count(*) AS n FROM ${sql(table)}`.pipe(
        Effect.mapError(failed("size")),
        Effect.map((rows) => Number(rows[0]?.n ?? 0))
      )
    }
  })
}

/**
 * A store in a SQL table (see `make`). Provide a client, e.g.
 * `SqliteClient.layer({ filename: "cache.db" })` from `@effect/sql-sqlite-node`
 * or `PgClient.layer({ url })` from `@effect/sql-pg`.
 *
 * Throws `IllegalArgumentException` for a table name that is not a plain
 * identifier.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<ResultCache.ResultCache, SqlError.SqlError, SqlClient.SqlClient> => Layer.effect(ResultCache.ResultCache, make(options))
