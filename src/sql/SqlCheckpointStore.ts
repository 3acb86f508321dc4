/**
 * A `CheckpointStore` in SQL tables, through whatever `SqlClient` is
 * provided: SQLite (3.32 or later) or PostgreSQL (9.5 or later).
 *
 * Building the layer runs its own migration: it creates `<prefix>meta`
 * (holding the schema version), `<prefix>runs`, `<prefix>outcomes` and
 * `<prefix>shards` (provider batch shards, added within version 1: a
 * database without it gets it) when they are missing, and refuses, with a `CheckpointError` saying why, a
 * database whose tables exist with another schema version or other columns
 * (a foreign database, or one written by another version of effect-batch);
 * it never alters or drops a table, and a refused database is only read. Once
 * the tables check out, on SQLite it sets
 * `journal_mode = WAL` and `synchronous = NORMAL`: a committed group then
 * costs no `fsync`, and survives a crash of the process (though not
 * necessarily of the machine).
 *
 * Every operation is one transaction; `record` writes its group with
 * multi-row upserts of 500 rows. Values, metadata and errors are JSON text;
 * times are epoch milliseconds in `BIGINT` columns. `@effect/sql` is loaded
 * only when the layer is built, so the memory store works without it.
 *
 * What it does not promise: `@effect/sql-sqlite-node`'s client sets WAL
 * itself when it opens the file, before this store runs, so on a file that is
 * not a SQLite database that client dies with a defect (`SqliteError: file is
 * not a database`) rather than this store failing with a `CheckpointError`;
 * build the client with `disableWAL: true` (this store sets WAL anyway) to get
 * the `CheckpointError`. Names go to the database as given (the client's name
 * transforms are switched off with `withoutTransforms()`).
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as CheckpointStore from "../CheckpointStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Prepended to the table names. A plain identifier: letters, digits and
   * `_`, not starting with a digit, at most 55 characters (so that every
   * table name fits PostgreSQL's 63). Default `"effect_batch_"`.
   */
  readonly prefix?: string | undefined
}

/**
 * The version of the tables this module reads and writes, kept in
 * `<prefix>meta` under the key `checkpoint_schema_version`.
 *
 * @since 0.1.0
 * @category models
 */
export const schemaVersion = 1

const versionKey = "checkpoint_schema_version"
const prefixPattern = /^[A-Za-z_][A-Za-z0-9_]{0,54}$/

// 500 rows of 13 columns are 6 500 parameters: within SQLite's 32 766 (since 3.32) and PostgreSQL's 65 535.
const rowsPerStatement = 500

const metaColumns = ["key", "value"]
const shardColumns = ["run_id", "shard_key", "state", "updated_at"]
const runColumns = ["run_id", "fingerprint", "state", "reason", "total", "meta", "created_at", "updated_at"]
const outcomeColumns = [
  "run_id",
  "item_key",
  "item_index",
  "status",
  "value",
  "error",
  "error_class",
  "reason",
  "attempts",
  "duration_ms",
  "cost",
  "tokens",
  "recorded_at"
]

// One DDL for both dialects: SQLite gives BIGINT integer affinity and DOUBLE PRECISION real affinity.
const ddl = (tables: Tables): ReadonlyArray<string> => [
  `CREATE TABLE IF NOT EXISTS "${tables.meta}" (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS "${tables.runs}" (
    run_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    total BIGINT,
    meta TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
  )`,
  `CREATE TABLE IF NOT EXISTS "${tables.outcomes}" (
    run_id TEXT NOT NULL,
    item_key TEXT NOT NULL,
    item_index BIGINT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    error TEXT,
    error_class TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    cost DOUBLE PRECISION,
    tokens BIGINT,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, item_key)
  )`,
  `CREATE TABLE IF NOT EXISTS "${tables.shards}" (
    run_id TEXT NOT NULL,
    shard_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, shard_key)
  )`
]

interface Tables {
  readonly meta: string
  readonly runs: string
  readonly outcomes: string
  readonly shards: string
}

// Drivers answer BIGINT and count(*) as a number (SQLite), a string (PostgreSQL) or a bigint (SafeIntegers).
type Int = number | string | bigint
const int = (value: Int): number => typeof value === "number" ? value : Number(value)
const intOrNull = (value: Int | null): number | null => value === null ? null : int(value)

interface RunRow {
  readonly run_id: string
  readonly fingerprint: string
  readonly state: CheckpointStore.State
  readonly reason: string | null
  readonly total: Int | null
  readonly meta: string | null
  readonly created_at: Int
  readonly updated_at: Int
}

interface OutcomeRow {
  readonly item_key: string
  readonly item_index: Int
  readonly status: CheckpointStore.Status
  readonly value: string | null
  readonly error: string | null
  readonly error_class: string | null
  readonly reason: string | null
  readonly attempts: Int
  readonly duration_ms: number | string
  readonly cost: number | string | null
  readonly tokens: Int | null
  readonly recorded_at: Int
}

interface ProgressRow {
  readonly run_id: string
  readonly status: CheckpointStore.Status
  readonly n: Int
  readonly cost: number | string | null
}

const outcomeFromRow = (row: OutcomeRow): CheckpointStore.StoredOutcome => ({
  itemKey: row.item_key,
  index: int(row.item_index),
  status: row.status,
  value: row.value,
  error: row.error,
  errorClass: row.error_class,
  reason: row.reason,
  attempts: int(row.attempts),
  durationMs: Number(row.duration_ms),
  cost: row.cost === null ? null : Number(row.cost),
  tokens: intOrNull(row.tokens),
  recordedAt: int(row.recorded_at)
})

const runFromRow = (row: RunRow, progress: ReadonlyArray<ProgressRow>): CheckpointStore.StoredRun => {
  const counts = { succeeded: 0, failed: 0, skipped: 0 }
  let cost = 0
  for (const p of progress) {
    if (p.status in counts) counts[p.status] += int(p.n)
    cost += p.cost === null ? 0 : Number(p.cost)
  }
  return {
    runId: row.run_id,
    fingerprint: row.fingerprint,
    state: row.state,
    reason: row.reason,
    total: intOrNull(row.total),
    meta: row.meta,
    createdAt: int(row.created_at),
    updatedAt: int(row.updated_at),
    counts,
    cost
  }
}

// Loaded when a store is built, so that importing this module (or the package) does not need @effect/sql.
const loadSql = Effect.tryPromise({
  try: () => import("@effect/sql/SqlClient"),
  catch: (cause) => new Cause.RuntimeException(`SqlCheckpointStore.layer needs the package @effect/sql: ${String(cause)}`)
}).pipe(Effect.orDie)

/** Why setting up failed, in words a user can act on. */
const setupProblem = (cause: unknown, filename: string | undefined): unknown => {
  const driverError = Predicate.isTagged(cause, "SqlError") && Predicate.hasProperty(cause, "cause") ? cause.cause : cause
  const code = Predicate.hasProperty(driverError, "code") ? driverError.code : undefined
  const file = filename === undefined ? "the database file" : JSON.stringify(filename)
  if (code === "SQLITE_NOTADB") {
    return `${file} is not a SQLite database (SQLITE_NOTADB: ${(driverError as Error).message}); ` +
      "point the store at another file, or move this one away"
  }
  if (code === "SQLITE_CORRUPT") {
    return `${file} is a corrupt SQLite database (SQLITE_CORRUPT: ${(driverError as Error).message}); restore it or move it away`
  }
  return cause
}

/**
 * A store in SQL tables (see the module's description). Throws
 * `IllegalArgumentException` for a prefix that is not a plain identifier.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<CheckpointStore.Store, CheckpointStore.CheckpointError, SqlClient.SqlClient> => {
  const prefix = options.prefix ?? "effect_batch_"
  if (!prefixPattern.test(prefix)) {
    throw new Cause.IllegalArgumentException(
      "SqlCheckpointStore.layer: prefix must be a plain identifier (letters, digits, _; not starting with a digit; " +
        `at most 55 characters), got ${JSON.stringify(prefix)}`
    )
  }
  const tables: Tables = { meta: `${prefix}meta`, runs: `${prefix}runs`, outcomes: `${prefix}outcomes`, shards: `${prefix}shards` }

  return Effect.gen(function*() {
    const { SqlClient: ClientTag } = yield* loadSql
    const client = yield* ClientTag
    const sql = client.withoutTransforms()
    // SqliteClient (node, bun, wasm) exposes its configuration; used only to name the file in errors.
    const config: unknown = Predicate.hasProperty(client, "config") ? client.config : undefined
    const filename = Predicate.hasProperty(config, "filename") && typeof config.filename === "string" ? config.filename : undefined

    const dialect = sql.onDialectOrElse({ sqlite: () => "sqlite" as const, pg: () => "pg" as const, orElse: () => undefined })

    const columnsOf = (table: string) =>
      (dialect === "sqlite"
        ? sql<{ readonly name: string }>`SELECT name FROM pragma_table_info(${table})`
        : sql<{ readonly name: string }>`SELECT column_name AS name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = ${table}`).pipe(Effect.map((rows) => rows.map((row) => row.name)))

    const foreign = (problem: string) =>
      Effect.fail(
        `${problem}: this is not a database of effect-batch's checkpoint store (schema version ${schemaVersion}); ` +
          "use another database or another table prefix"
      )

    const setup = Effect.gen(function*() {
      if (dialect === undefined) return yield* Effect.fail("only SQLite and PostgreSQL clients are supported")
      const expected: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
        [tables.meta, metaColumns],
        [tables.runs, runColumns],
        [tables.outcomes, outcomeColumns],
        [tables.shards, shardColumns]
      ]
      const found = new Map<string, ReadonlyArray<string>>()
      for (const [table] of expected) found.set(table, yield* columnsOf(table))
      for (const [table, columns] of expected) {
        const actual = found.get(table)!
        if (actual.length === 0) continue
        const missing = columns.filter((c) => !actual.includes(c))
        const extra = actual.filter((c) => !columns.includes(c))
        if (missing.length > 0 || extra.length > 0) {
          const detail = [
            missing.length > 0 ? `lacks ${missing.join(", ")}` : "",
            extra.length > 0 ? `has unknown columns ${extra.join(", ")}` : ""
          ].filter((s) => s !== "").join(" and ")
          return yield* foreign(`table ${table} ${detail}`)
        }
      }
      const version = found.get(tables.meta)!.length === 0
        ? undefined
        : (yield* sql<{ readonly value: string }>`SELECT value FROM ${sql(tables.meta)} WHERE key = ${versionKey}`)[0]?.value
      if (version === undefined) {
        const existing = [tables.runs, tables.outcomes].filter((table) => found.get(table)!.length > 0)
        if (existing.length > 0) return yield* foreign(`${existing.join(" and ")} exist but ${tables.meta} holds no schema version`)
      } else if (version !== String(schemaVersion)) {
        return yield* foreign(`${tables.meta} says schema version ${version}`)
      }
      // Only now that the file is known to be ours (or new): WAL rewrites the file's header and leaves -wal and
      // -shm files beside it, which a refused foreign database must not get.
      if (dialect === "sqlite") {
        yield* sql.unsafe("PRAGMA journal_mode = WAL")
        yield* sql.unsafe("PRAGMA synchronous = NORMAL")
      }
      yield* sql.withTransaction(Effect.gen(function*() {
        for (const statement of ddl(tables)) yield* sql.unsafe(statement)
        yield* sql`INSERT INTO ${sql(tables.meta)} (key, value) VALUES (${versionKey}, ${String(schemaVersion)})
          ON CONFLICT (key) DO NOTHING`
      }))
    })
    yield* setup.pipe(
      Effect.mapError((cause) => new CheckpointStore.CheckpointError({ operation: "setup", cause: setupProblem(cause, filename) }))
    )

    const runs = sql(tables.runs)
    const outcomes = sql(tables.outcomes)
    const shards = sql(tables.shards)
    const upsert = sql.literal(
      `ON CONFLICT (run_id, item_key) DO UPDATE SET ${
        outcomeColumns.filter((c) => c !== "run_id" && c !== "item_key").map((c) => `${c} = excluded.${c}`).join(", ")
      }`
    )

    const getRun = (runId: string) =>
      Effect.gen(function*() {
        const rows = yield* sql<RunRow>`SELECT * FROM ${runs} WHERE run_id = ${runId}`
        if (rows.length === 0) return undefined
        const progress = yield* sql<ProgressRow>`SELECT run_id, status, count(*) AS n, sum(cost) AS cost
          FROM ${outcomes} WHERE run_id = ${runId} GROUP BY run_id, status`
        return runFromRow(rows[0]!, progress)
      })

    const exists = (runId: string) =>
      Effect.map(sql<{ readonly run_id: string }>`SELECT run_id FROM ${runs} WHERE run_id = ${runId}`, (rows) => rows.length > 0)

    return CheckpointStore.make({
      open: ({ fingerprint, meta, now, runId, total }) =>
        sql.withTransaction(Effect.gen(function*() {
          // Resume first, then create: neither touches a run with another fingerprint, and no read precedes the writes.
          yield* sql`UPDATE ${runs} SET state = 'running', reason = NULL, updated_at = ${now},
            total = COALESCE(${total}, total), meta = COALESCE(${meta}, meta)
            WHERE run_id = ${runId} AND fingerprint = ${fingerprint}`
          yield* sql`INSERT INTO ${runs} ${
            sql.insert({ run_id: runId, fingerprint, state: "running", reason: null, total, meta, created_at: now, updated_at: now })
          } ON CONFLICT (run_id) DO NOTHING`
          return (yield* getRun(runId))!
        })),

      record: (runId, rows, now) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`UPDATE ${runs} SET updated_at = ${now} WHERE run_id = ${runId}`
          if (!(yield* exists(runId))) return false
          for (let i = 0; i < rows.length; i += rowsPerStatement) {
            const values = rows.slice(i, i + rowsPerStatement).map((o) => ({
              run_id: runId,
              item_key: o.itemKey,
              item_index: o.index,
              status: o.status,
              value: o.value,
              error: o.error,
              error_class: o.errorClass,
              reason: o.reason,
              attempts: o.attempts,
              duration_ms: o.durationMs,
              cost: o.cost,
              tokens: o.tokens,
              recorded_at: o.recordedAt
            }))
            yield* sql`INSERT INTO ${outcomes} ${sql.insert(values)} ${upsert}`
          }
          return true
        })),

      load: (runId) =>
        sql.withTransaction(Effect.gen(function*() {
          if (!(yield* exists(runId))) return undefined
          const rows = yield* sql<OutcomeRow>`SELECT item_key, item_index, status, value, error, error_class, reason,
            attempts, duration_ms, cost, tokens, recorded_at FROM ${outcomes} WHERE run_id = ${runId}`
          return rows.map(outcomeFromRow)
        })),

      setState: (runId, state, reason, now) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`UPDATE ${runs} SET state = ${state}, reason = ${reason}, updated_at = ${now} WHERE run_id = ${runId}`
          return yield* exists(runId)
        })),

      list: sql.withTransaction(Effect.gen(function*() {
        const rows = yield* sql<RunRow>`SELECT * FROM ${runs} ORDER BY created_at DESC, run_id`
        const progress = yield* sql<ProgressRow>`SELECT run_id, status, count(*) AS n, sum(cost) AS cost
          FROM ${outcomes} GROUP BY run_id, status`
        const byRun = new Map<string, Array<ProgressRow>>()
        for (const p of progress) {
          const list = byRun.get(p.run_id)
          if (list === undefined) byRun.set(p.run_id, [p])
          else list.push(p)
        }
        return rows.map((row) => runFromRow(row, byRun.get(row.run_id) ?? []))
      })),

      get: (runId) => sql.withTransaction(getRun(runId)),

      forget: (runId) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`DELETE FROM ${outcomes} WHERE run_id = ${runId}`
          yield* sql`DELETE FROM ${shards} WHERE run_id = ${runId}`
          const existed = yield* exists(runId)
          yield* sql`DELETE FROM ${runs} WHERE run_id = ${runId}`
          return existed
        })),

      saveShards: (runId, rows, now) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`UPDATE ${runs} SET updated_at = ${now} WHERE run_id = ${runId}`
          if (!(yield* exists(runId))) return false
          for (let i = 0; i < rows.length; i += rowsPerStatement) {
            const values = rows.slice(i, i + rowsPerStatement)
              .map((r) => ({ run_id: runId, shard_key: r.key, state: r.state, updated_at: now }))
            yield* sql`INSERT INTO ${shards} ${sql.insert(values)}
              ON CONFLICT (run_id, shard_key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`
          }
          return true
        })),

      loadShards: (runId) =>
        sql.withTransaction(Effect.gen(function*() {
          if (!(yield* exists(runId))) return undefined
          const rows = yield* sql<{ readonly shard_key: string, readonly state: string }>`SELECT shard_key, state FROM ${shards}
            WHERE run_id = ${runId}`
          return rows.map((row) => ({ key: row.shard_key, state: row.state }))
        }))
    })
  })
}

/**
 * A checkpoint store in SQL tables (see `make`). Provide a client, e.g.
 * `SqliteClient.layer({ filename: "checkpoints.db", disableWAL: true })` from
 * `@effect/sql-sqlite-node` or `PgClient.layer({ url })` from
 * `@effect/sql-pg`.
 *
 * Throws `IllegalArgumentException` for a prefix that is not a plain
 * identifier.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStore.CheckpointError, SqlClient.SqlClient> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))
