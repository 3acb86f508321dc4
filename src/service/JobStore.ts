/**
 * Where the job service keeps its jobs: each job's definition, its items and
 * their outcomes, and the events its subscribers were sent — in SQL, through
 * `@effect/sql` (SQLite for the embedded default, PostgreSQL for several
 * machines; one DDL serves both).
 *
 * Item outcomes live on the item's row: `status` is null until the item
 * settles, then `succeeded`, `failed` or `skipped`. That makes results in
 * input order, counts and dead letters plain queries, and lets a chunk that
 * runs again after a crash pick exactly the items still pending.
 *
 * The tables are made if absent, and columns added since (the payload hash)
 * are added to a database made before, on start. An idempotency key is
 * unique per tenant by a unique index, so inserts racing with one key make
 * one job whatever the backend.
 *
 * What it does not promise: the workflow engine's own tables (cluster
 * messages) are separate; this store does not know whether a job's workflow
 * is running. Every method fails with a `JobStoreError` (the SQL error as
 * cause) — callers treat it as a defect of the service. On SQLite, two
 * processes starting at once on a database made before a column was added
 * may both try to add it; the second fails to start (start it again).
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Job from "./Job.js"

/**
 * @since 0.1.0
 * @category errors
 */
export class JobStoreError extends Data.TaggedError("JobStoreError")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause as { readonly message?: unknown }
    return `JobStore.${this.operation} failed: ${typeof cause?.message === "string" ? cause.message : String(this.cause)}`
  }
}

/**
 * What defines a job, as submitted (validated) and kept.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spec {
  readonly maxCost?: number | undefined
  readonly maxAttempts?: number | undefined
  readonly softLimitSeconds?: number | undefined
  readonly hardLimitSeconds?: number | undefined
  readonly itemTimeoutSeconds?: number | undefined
  readonly itemDeadlineSeconds?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface JobRow {
  readonly id: string
  readonly tenant: string
  readonly idempotencyKey: string | undefined
  /**
   * The SHA-256 of the canonical JSON of the submitted payload, to tell a
   * retry from another request under the same key; `undefined` for a job
   * stored before it was kept.
   */
  readonly payloadHash: string | undefined
  readonly state: Job.JobState
  readonly reason: string | undefined
  readonly profile: string
  readonly model: string
  readonly priority: number
  readonly spec: Spec
  readonly metadata: Readonly<Record<string, string>>
  readonly total: number
  readonly round: number
  readonly createdAt: number
  readonly startedAt: number | undefined
  readonly finishedAt: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Totals extends Job.Counts {
  readonly cost: number
  readonly tokens: number
}

/**
 * @since 0.1.0
 * @category models
 */
export type OutcomeStatus = "succeeded" | "failed" | "skipped"

/**
 * An item's outcome, as the runner records it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome {
  readonly index: number
  readonly status: OutcomeStatus
  /** JSON of the value (succeeded) or of the error `{ class, message, status? }` (failed, skipped). */
  readonly output: string
  readonly errorClass: string | undefined
  readonly attempts: number
  readonly durationMs: number
  readonly cost: number
  readonly tokens: number
}

/**
 * An item as submitted: its input as JSON text, or, for an input line that
 * could not be read, the line's text and why.
 *
 * @since 0.1.0
 * @category models
 */
export type NewItem = { readonly input: string, readonly rejected?: undefined } | {
  readonly input: string
  /** `file:line: what was wrong` */
  readonly rejected: string
}

/**
 * The error class of items refused at submission.
 *
 * @since 0.1.0
 * @category models
 */
export const rejectedClass = "Rejected"

/**
 * A settled item with its input, as results and dead letters read it.
 *
 * @since 0.1.0
 * @category models
 */
export interface SettledItem extends Outcome {
  readonly input: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface StoredEvent {
  readonly seq: number
  readonly type: string
  readonly data: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /**
   * Inserts the job and its items in one transaction (a rejected item is
   * stored failed, with class `Rejected`, and is never run or replayed); with
   * an idempotency key the tenant used before, inserts nothing and returns
   * that job instead (`created: false`), whatever its `payloadHash`: the
   * caller judges. Two inserts with one key at once make one job: the
   * unique index decides, and the other gets that job.
   */
  readonly insert: (
    job: Omit<JobRow, "startedAt" | "finishedAt" | "reason" | "round" | "state">,
    items: ReadonlyArray<NewItem>
  ) => Effect.Effect<{ readonly job: JobRow, readonly created: boolean }, JobStoreError>
  /** The job, if it exists and (when `tenant` is given) belongs to `tenant`. */
  readonly get: (id: string, tenant?: string) => Effect.Effect<JobRow | undefined, JobStoreError>
  /** Newest first; `before` is the `createdAt`/`id` of the last job of the previous page. */
  readonly list: (query: {
    readonly tenant: string
    readonly state?: Job.JobState | undefined
    readonly limit: number
    readonly before?: { readonly createdAt: number, readonly id: string } | undefined
  }) => Effect.Effect<ReadonlyArray<JobRow>, JobStoreError>
  /**
   * Moves the job to `state` if `Job.transitions` allows the move from the
   * state it is in, atomically (a move the table refuses changes nothing);
   * whether it moved. `reason` replaces the job's reason.
   */
  readonly setState: (
    id: string,
    state: Job.JobState,
    options: {
      readonly reason?: string | undefined
      readonly now: number
    }
  ) => Effect.Effect<boolean, JobStoreError>
  /** Items `from` ≤ index < `to` not settled yet, in order. */
  readonly pending: (
    id: string,
    from: number,
    to: number
  ) => Effect.Effect<ReadonlyArray<{ readonly index: number, readonly input: string }>, JobStoreError>
  /** Records outcomes in one transaction. */
  readonly record: (id: string, outcomes: ReadonlyArray<Outcome>, now: number) => Effect.Effect<void, JobStoreError>
  readonly totals: (id: string) => Effect.Effect<Totals, JobStoreError>
  /** Settled items with index > `after`, in order, at most `limit`. */
  readonly settled: (id: string, after: number, limit: number) => Effect.Effect<ReadonlyArray<SettledItem>, JobStoreError>
  readonly deadLetters: (id: string) => Effect.Effect<ReadonlyArray<SettledItem>, JobStoreError>
  /** Records every item still pending as `skipped` with `reason`; how many. */
  readonly skipPending: (id: string, reason: string, now: number) => Effect.Effect<number, JobStoreError>
  /**
   * Marks failed items pending again (never `Rejected` ones) and, if there
   * were any, counts a round and moves the job to `queued`; how many. Only a
   * job the table lets move to `queued` (one that ended) is reopened: for
   * any other, nothing changes and the answer is 0.
   */
  readonly reopenFailed: (id: string, now: number) => Effect.Effect<number, JobStoreError>
  readonly appendEvents: (id: string, events: ReadonlyArray<StoredEvent & { readonly at: number }>) => Effect.Effect<void, JobStoreError>
  /** Events with seq > `after`, in order. */
  readonly events: (id: string, after: number) => Effect.Effect<ReadonlyArray<StoredEvent>, JobStoreError>
  readonly lastSeq: (id: string) => Effect.Effect<number, JobStoreError>
  /** Jobs queued or running: after a restart, the ones the service looks after again. */
  readonly unfinished: Effect.Effect<ReadonlyArray<JobRow>, JobStoreError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class JobStore extends Context.Tag("effect-batch/JobStore")<JobStore, Store>() {}

const ddl = [
  `CREATE TABLE IF NOT EXISTS effect_batch_jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    idempotency_key TEXT,
    payload_hash TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    profile TEXT NOT NULL,
    model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    spec TEXT NOT NULL,
    metadata TEXT NOT NULL,
    total BIGINT NOT NULL,
    round INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL
  )`,
  "CREATE UNIQUE INDEX IF NOT EXISTS effect_batch_jobs_idempotency ON effect_batch_jobs (tenant, idempotency_key)",
  "CREATE INDEX IF NOT EXISTS effect_batch_jobs_tenant ON effect_batch_jobs (tenant, created_at)",
  `CREATE TABLE IF NOT EXISTS effect_batch_job_items (
    job_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    input TEXT NOT NULL,
    status TEXT,
    output TEXT,
    error_class TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    settled_at BIGINT,
    PRIMARY KEY (job_id, idx)
  )`,
  `CREATE TABLE IF NOT EXISTS effect_batch_job_events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
  )`
]

/** Columns added since the tables were first made: a database made before gets them at start. */
const addedColumns: ReadonlyArray<{ readonly table: string, readonly column: string, readonly type: string }> = [
  { table: "effect_batch_jobs", column: "payload_hash", type: "TEXT" }
]

// Drivers answer BIGINT and aggregates as a number (SQLite) or a string (PostgreSQL).
type Num = number | string | bigint | null
const num = (value: Num): number => value === null ? 0 : typeof value === "number" ? value : Number(value)
const optNum = (value: Num): number | undefined => value === null ? undefined : num(value)

interface JobRecord {
  readonly id: string
  readonly tenant: string
  readonly idempotency_key: string | null
  readonly payload_hash: string | null
  readonly state: Job.JobState
  readonly reason: string | null
  readonly profile: string
  readonly model: string
  readonly priority: Num
  readonly spec: string
  readonly metadata: string
  readonly total: Num
  readonly round: Num
  readonly created_at: Num
  readonly started_at: Num
  readonly finished_at: Num
}

const jobOf = (row: JobRecord): JobRow => ({
  id: row.id,
  tenant: row.tenant,
  idempotencyKey: row.idempotency_key ?? undefined,
  payloadHash: row.payload_hash ?? undefined,
  state: row.state,
  reason: row.reason ?? undefined,
  profile: row.profile,
  model: row.model,
  priority: num(row.priority),
  spec: JSON.parse(row.spec) as Spec,
  metadata: JSON.parse(row.metadata) as Record<string, string>,
  total: num(row.total),
  round: num(row.round),
  createdAt: num(row.created_at),
  startedAt: optNum(row.started_at),
  finishedAt: optNum(row.finished_at)
})

interface ItemRecord {
  readonly idx: Num
  readonly input: string
  readonly status: OutcomeStatus
  readonly output: string
  readonly error_class: string | null
  readonly attempts: Num
  readonly duration_ms: Num
  readonly cost: Num
  readonly tokens: Num
}

const settledOf = (row: ItemRecord): SettledItem => ({
  index: num(row.idx),
  input: row.input,
  status: row.status,
  output: row.output,
  errorClass: row.error_class ?? undefined,
  attempts: num(row.attempts),
  durationMs: num(row.duration_ms),
  cost: num(row.cost),
  tokens: num(row.tokens)
})

// 500 rows of up to 8 values: far within SQLite's and PostgreSQL's parameter limits.
const rowsPerStatement = 500

/**
 * The store on the `SqlClient` in context; creates its tables if absent.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Store, JobStoreError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const wrap = (operation: string) => <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, JobStoreError> =>
    Effect.mapError(effect, (cause) => new JobStoreError({ operation, cause }))
  yield* sql.onDialectOrElse({
    sqlite: () => Effect.asVoid(sql.unsafe("PRAGMA journal_mode = WAL")),
    orElse: () => Effect.void
  }).pipe(wrap("setup"))
  for (const statement of ddl) yield* sql.unsafe(statement).pipe(wrap("setup"))
  for (const { column, table, type } of addedColumns) {
    yield* sql.onDialectOrElse({
      pg: () => Effect.asVoid(sql.unsafe(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${column} ${type}`)),
      // SQLite has no ADD COLUMN IF NOT EXISTS.
      orElse: () =>
        Effect.flatMap(sql.unsafe<{ readonly name: string }>(`PRAGMA table_info(${table})`), (columns) =>
          columns.some((c) => c.name === column)
            ? Effect.void
            : Effect.asVoid(sql.unsafe(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`)))
    }).pipe(wrap("setup"))
  }

  const get = (id: string, tenant?: string) =>
    (tenant === undefined
      ? sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE id = ${id}`
      : sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE id = ${id} AND tenant = ${tenant}`).pipe(
      Effect.map((rows) => rows.length === 0 ? undefined : jobOf(rows[0]!)),
      wrap("get")
    )

  const insert: Store["insert"] = (job, items) =>
    sql.withTransaction(Effect.gen(function*() {
      // A key the tenant used before conflicts on the unique index; a submit with the same key in
      // another transaction makes this one wait for it (PostgreSQL), then conflict too.
      const inserted = yield* sql<{ readonly id: string }>`INSERT INTO effect_batch_jobs ${
        sql.insert({
          id: job.id,
          tenant: job.tenant,
          idempotency_key: job.idempotencyKey ?? null,
          payload_hash: job.payloadHash ?? null,
          state: "queued",
          reason: null,
          profile: job.profile,
          model: job.model,
          priority: job.priority,
          spec: JSON.stringify(job.spec),
          metadata: JSON.stringify(job.metadata),
          total: job.total,
          round: 0,
          created_at: job.createdAt,
          started_at: null,
          finished_at: null,
          updated_at: job.createdAt
        })
      } ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id`
      if (inserted.length === 0) {
        const existing = yield* sql<JobRecord>`SELECT * FROM effect_batch_jobs
          WHERE tenant = ${job.tenant} AND idempotency_key = ${job.idempotencyKey ?? null}`
        return { job: jobOf(existing[0]!), created: false }
      }
      for (let from = 0; from < items.length; from += rowsPerStatement) {
        const rows = items.slice(from, from + rowsPerStatement).map((item, i) => ({
          job_id: job.id,
          idx: from + i,
          input: item.input,
          status: item.rejected === undefined ? null : "failed",
          output: item.rejected === undefined ? null : JSON.stringify({ class: rejectedClass, message: item.rejected }),
          error_class: item.rejected === undefined ? null : rejectedClass,
          settled_at: item.rejected === undefined ? null : job.createdAt
        }))
        yield* sql`INSERT INTO effect_batch_job_items ${sql.insert(rows)}`
      }
      return { job: { ...job, state: "queued" as const, reason: undefined, round: 0, startedAt: undefined, finishedAt: undefined }, created: true }
    })).pipe(wrap("insert"))

  const list: Store["list"] = ({ before, limit, state, tenant }) => {
    const stateFilter = state === undefined ? sql`` : sql`AND state = ${state}`
    const cursor = before === undefined
      ? sql``
      : sql`AND (created_at < ${before.createdAt} OR (created_at = ${before.createdAt} AND id < ${before.id}))`
    return sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE tenant = ${tenant} ${stateFilter} ${cursor}
      ORDER BY created_at DESC, id DESC LIMIT ${limit}`.pipe(Effect.map((rows) => rows.map(jobOf)), wrap("list"))
  }

  const setState: Store["setState"] = (id, state, { now, reason }) => {
    const sources = Job.sourcesOf(state)
    if (sources.length === 0) return Effect.succeed(false)
    const started = state === "running" ? sql`, started_at = COALESCE(started_at, ${now})` : sql``
    const finished = Job.isTerminal(state) ? sql`, finished_at = ${now}` : sql`, finished_at = NULL`
    // The guard is the transition table: the move and the check are one statement.
    return sql<{ readonly id: string }>`UPDATE effect_batch_jobs SET state = ${state}, reason = ${reason ?? null},
      updated_at = ${now} ${started} ${finished} WHERE id = ${id} AND state IN ${sql.in(sources)} RETURNING id`.pipe(
        Effect.map((rows) => rows.length > 0),
        wrap("setState")
      )
  }

  const pending: Store["pending"] = (id, from, to) =>
    sql<{ readonly idx: Num, readonly input: string }>`SELECT idx, input FROM effect_batch_job_items
      WHERE job_id = ${id} AND idx >= ${from} AND idx < ${to} AND status IS NULL ORDER BY idx`.pipe(
        Effect.map((rows) => rows.map((row) => ({ index: num(row.idx), input: row.input }))),
        wrap("pending")
      )

  // One UPDATE … FROM (VALUES …) per group (SQLite ≥ 3.33 and PostgreSQL both read it, with the VALUES
  // columns named column1…; the casts give PostgreSQL their types): a statement per outcome cost 2-3× more.
  const updateGroup = (id: string, outcomes: ReadonlyArray<Outcome>, now: number) =>
    sql`UPDATE effect_batch_job_items SET status = v.column2, output = v.column3, error_class = v.column4,
      attempts = v.column5, duration_ms = v.column6, cost = v.column7, tokens = v.column8, settled_at = ${now}
      FROM (VALUES ${
        sql.csv(outcomes.map((o) =>
          sql`(CAST(${o.index} AS BIGINT), ${o.status}, ${o.output}, ${o.errorClass ?? null}, CAST(${o.attempts} AS INTEGER),
          CAST(${o.durationMs} AS DOUBLE PRECISION), CAST(${o.cost} AS DOUBLE PRECISION), CAST(${o.tokens} AS BIGINT))`
        ))
      }) AS v WHERE effect_batch_job_items.job_id = ${id} AND effect_batch_job_items.idx = v.column1`

  const record: Store["record"] = (id, outcomes, now) => {
    if (outcomes.length === 0) return Effect.void
    if (outcomes.length <= rowsPerStatement) return Effect.asVoid(updateGroup(id, outcomes, now)).pipe(wrap("record"))
    const groups: Array<ReadonlyArray<Outcome>> = []
    for (let from = 0; from < outcomes.length; from += rowsPerStatement) groups.push(outcomes.slice(from, from + rowsPerStatement))
    return sql.withTransaction(Effect.forEach(groups, (group) => updateGroup(id, group, now), { discard: true })).pipe(wrap("record"))
  }

  const totals: Store["totals"] = (id) =>
    sql<{ readonly status: OutcomeStatus | null, readonly n: Num, readonly cost: Num, readonly tokens: Num }>`
      SELECT status, COUNT(*) AS n, SUM(cost) AS cost, SUM(tokens) AS tokens FROM effect_batch_job_items
      WHERE job_id = ${id} GROUP BY status`.pipe(
        Effect.map((rows) => {
          const by = { succeeded: 0, failed: 0, skipped: 0, pending: 0 }
          let cost = 0
          let tokens = 0
          for (const row of rows) {
            by[row.status ?? "pending"] += num(row.n)
            cost += num(row.cost)
            tokens += num(row.tokens)
          }
          return { ...by, total: by.succeeded + by.failed + by.skipped + by.pending, cost, tokens }
        }),
        wrap("totals")
      )

  const settled: Store["settled"] = (id, after, limit) =>
    sql<ItemRecord>`SELECT idx, input, status, output, error_class, attempts, duration_ms, cost, tokens
      FROM effect_batch_job_items WHERE job_id = ${id} AND idx > ${after} AND status IS NOT NULL
      ORDER BY idx LIMIT ${limit}`.pipe(Effect.map((rows) => rows.map(settledOf)), wrap("settled"))

  const deadLetters: Store["deadLetters"] = (id) =>
    sql<ItemRecord>`SELECT idx, input, status, output, error_class, attempts, duration_ms, cost, tokens
      FROM effect_batch_job_items WHERE job_id = ${id} AND status = 'failed' ORDER BY idx`.pipe(
        Effect.map((rows) => rows.map(settledOf)),
        wrap("deadLetters")
      )

  const skipPending: Store["skipPending"] = (id, reason, now) =>
    sql<{ readonly idx: Num }>`UPDATE effect_batch_job_items SET status = 'skipped', output = ${JSON.stringify({ reason })},
      settled_at = ${now} WHERE job_id = ${id} AND status IS NULL RETURNING idx`.pipe(
        Effect.map((rows) => rows.length),
        wrap("skipPending")
      )

  const reopenFailed: Store["reopenFailed"] = (id, now) =>
    sql.withTransaction(Effect.gen(function*() {
      const sources = sql.in(Job.sourcesOf("queued"))
      const reopened = yield* sql<{ readonly idx: Num }>`UPDATE effect_batch_job_items
        SET status = NULL, output = NULL, error_class = NULL, settled_at = NULL
        WHERE job_id = ${id} AND status = 'failed' AND error_class <> ${rejectedClass}
        AND EXISTS (SELECT 1 FROM effect_batch_jobs WHERE id = ${id} AND state IN ${sources}) RETURNING idx`
      if (reopened.length > 0) {
        yield* sql`UPDATE effect_batch_jobs SET round = round + 1, state = 'queued', reason = NULL, finished_at = NULL,
          updated_at = ${now} WHERE id = ${id} AND state IN ${sources}`
      }
      return reopened.length
    })).pipe(wrap("reopenFailed"))

  const appendEvents: Store["appendEvents"] = (id, events) =>
    events.length === 0 ? Effect.void : sql`INSERT INTO effect_batch_job_events ${
      sql.insert(events.map((e) => ({ job_id: id, seq: e.seq, type: e.type, data: e.data, at: e.at })))
    }`.pipe(Effect.asVoid, wrap("appendEvents"))

  const events: Store["events"] = (id, after) =>
    sql<{ readonly seq: Num, readonly type: string, readonly data: string }>`SELECT seq, type, data
      FROM effect_batch_job_events WHERE job_id = ${id} AND seq > ${after} ORDER BY seq`.pipe(
        Effect.map((rows) => rows.map((row) => ({ seq: num(row.seq), type: row.type, data: row.data }))),
        wrap("events")
      )

  const lastSeq: Store["lastSeq"] = (id) =>
    sql<{ readonly seq: Num }>`SELECT MAX(seq) AS seq FROM effect_batch_job_events WHERE job_id = ${id}`.pipe(
      Effect.map((rows) => num(rows[0]?.seq ?? null)),
      wrap("lastSeq")
    )

  const unfinished: Store["unfinished"] = sql<JobRecord>`SELECT * FROM effect_batch_jobs
    WHERE state IN ('queued', 'running') ORDER BY created_at`.pipe(Effect.map((rows) => rows.map(jobOf)), wrap("unfinished"))

  return {
    insert,
    get,
    list,
    setState,
    pending,
    record,
    totals,
    settled,
    deadLetters,
    skipPending,
    reopenFailed,
    appendEvents,
    events,
    lastSeq,
    unfinished
  }
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobStore, JobStoreError, SqlClient.SqlClient> = Layer.effect(JobStore, make)
