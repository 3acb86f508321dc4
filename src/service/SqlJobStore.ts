/**
 * The `JobStore` in SQL, through the `SqlClient` in context: SQLite for the
 * embedded default, PostgreSQL for several machines; one DDL serves both.
 *
 * Item outcomes live on the item's row: `status` is null until the item
 * settles. What is kept as JSON text (a job's spec and metadata, an item's
 * input and output) is decoded with the Schemas of `Job` when read back: a
 * value that does not decode fails the read with a `JobStoreError`.
 *
 * Each job's counts by status, cost and tokens (`totals`) are kept in
 * `effect_batch_job_totals` by triggers on the items, so a read costs the
 * same at ten items as at a million, and stays exact whoever writes the
 * items (another version's process, an operator's SQL).
 *
 * On SQLite it sets `journal_mode = WAL` and `synchronous = NORMAL`: a
 * commit costs no `fsync` and survives a crash of the process, though not
 * necessarily of the machine (a power cut may lose the last outcomes
 * recorded; their items then run again).
 *
 * Building the store runs its own migration. The tables carry a schema
 * version, in `effect_batch_jobs_meta`: a database without one (made before
 * it was kept, with or without the payload hash column) is brought to the
 * current version (version 2 adds `effect_batch_job_time`, version 3 the
 * counts and their triggers, counting each job's items once); a database with a newer or unknown version is refused,
 * with a `JobStoreError` whose cause (`UnsupportedSchemaVersion`) names the
 * version found and the one supported, and is left as it was.
 *
 * What it does not promise: the workflow engine's own tables (cluster
 * messages) are separate. Two processes upgrading one database at the same
 * moment may both try to add a column on SQLite; the second then fails to
 * start (start it again). The table names are fixed (`effect_batch_jobs`,
 * `effect_batch_job_items`, `effect_batch_job_events`, `effect_batch_job_time`, `effect_batch_job_totals`,
 * `effect_batch_jobs_meta`), as are the triggers' and, on PostgreSQL (11 or later), their functions'
 * (`effect_batch_jobs_counted`, `effect_batch_job_items_counted`): one job store per database.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Arr from "effect/Array"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Job from "./Job.js"
import * as JobStore from "./JobStore.js"

/**
 * The version of the tables this module reads and writes, kept in
 * `effect_batch_jobs_meta` under the key `schema_version`.
 *
 * @since 0.1.0
 * @category models
 */
export const schemaVersion = 3

/** The advisory lock (two-key form, apart from `@effect/cluster`'s one-key shard locks) held while migrating. */
const setupLockKey = [0x45424a53, 1] as const

/**
 * The database's tables have a schema version this effect-batch does not
 * know (written by a newer one): upgrade effect-batch, or use another
 * database.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnsupportedSchemaVersion extends Data.TaggedError("UnsupportedSchemaVersion")<{
  readonly found: string
  readonly supported: number
}> {
  override get message(): string {
    return `${metaTable} says schema version ${this.found}, and this effect-batch reads version ${this.supported}: ` +
      "upgrade effect-batch, or use another database"
  }
}

const metaTable = "effect_batch_jobs_meta"
const versionKey = "schema_version"

/** Where each job's items' time went, summed over its chunks (`BatchReport.TimeSpent`). */
const timeTable = `CREATE TABLE IF NOT EXISTS effect_batch_job_time (
    job_id TEXT PRIMARY KEY,
    items BIGINT NOT NULL,
    queued_ms DOUBLE PRECISION NOT NULL,
    rate_limit_ms DOUBLE PRECISION NOT NULL,
    gate_ms DOUBLE PRECISION NOT NULL,
    in_flight_ms DOUBLE PRECISION NOT NULL,
    backoff_ms DOUBLE PRECISION NOT NULL,
    wall_ms DOUBLE PRECISION NOT NULL
  )`

/**
 * Each job's counts by status, and cost and tokens summed over its items: kept by triggers on the items (version
 * 3), so that reading them does not scan a job's items (7 ms per read at 10 000 items on SQLite, read at every
 * progress tick and by every list of jobs).
 */
const totalsTable = `CREATE TABLE IF NOT EXISTS effect_batch_job_totals (
    job_id TEXT PRIMARY KEY,
    total BIGINT NOT NULL DEFAULT 0,
    succeeded BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0
  )`

const statuses = ["succeeded", "failed", "skipped"] as const
/** `f` of each status, joined with commas (one column or expression per status). */
const perStatus = (f: (status: string) => string) => statuses.map(f).join(", ")

/**
 * SQLite's triggers, row by row. `IS` compares with NULL (a pending item) as a value, and a cost that does not
 * change adds nothing (no rounding creeps in).
 */
const sqliteTotalsTriggers = (() => {
  const counted = (row: "NEW" | "OLD", sign: "+" | "-") =>
    `${perStatus((status) => `${status} = ${status} ${sign} (${row}.status IS '${status}')`)}, ` +
    `cost = cost ${sign} ${row}.cost, tokens = tokens ${sign} ${row}.tokens`
  const changed = `${perStatus((status) => `${status} = ${status} - (OLD.status IS '${status}') + (NEW.status IS '${status}')`)}, ` +
    "cost = cost + (NEW.cost - OLD.cost), tokens = tokens + (NEW.tokens - OLD.tokens)"
  return [
    `CREATE TRIGGER IF NOT EXISTS effect_batch_jobs_counted AFTER INSERT ON effect_batch_jobs
      BEGIN INSERT OR IGNORE INTO effect_batch_job_totals (job_id) VALUES (NEW.id); END`,
    `CREATE TRIGGER IF NOT EXISTS effect_batch_jobs_uncounted AFTER DELETE ON effect_batch_jobs
      BEGIN DELETE FROM effect_batch_job_totals WHERE job_id = OLD.id; END`,
    `CREATE TRIGGER IF NOT EXISTS effect_batch_job_items_counted AFTER INSERT ON effect_batch_job_items
      BEGIN UPDATE effect_batch_job_totals SET total = total + 1, ${counted("NEW", "+")} WHERE job_id = NEW.job_id; END`,
    `CREATE TRIGGER IF NOT EXISTS effect_batch_job_items_recounted AFTER UPDATE OF status, cost, tokens ON effect_batch_job_items
      BEGIN UPDATE effect_batch_job_totals SET ${changed} WHERE job_id = NEW.job_id; END`,
    `CREATE TRIGGER IF NOT EXISTS effect_batch_job_items_uncounted AFTER DELETE ON effect_batch_job_items
      BEGIN UPDATE effect_batch_job_totals SET total = total - 1, ${counted("OLD", "-")} WHERE job_id = OLD.job_id; END`
  ]
})()

/**
 * PostgreSQL's triggers, statement by statement (through transition tables): one update of each job's counts per
 * statement, not one per item (a flush of 500 outcomes would leave 500 dead versions of the job's row). Needs
 * PostgreSQL 11 or later (`EXECUTE FUNCTION`).
 */
const pgTotalsTriggers = (() => {
  const is = (column: string, status: string) => `CASE WHEN ${column} = '${status}' THEN 1 ELSE 0 END`
  const sums = `SUM(total) AS total, ${perStatus((status) => `SUM(${status}) AS ${status}`)}, SUM(cost) AS cost, SUM(tokens) AS tokens`
  const added = `total = t.total + d.total, ${perStatus((status) => `${status} = t.${status} + d.${status}`)}, ` +
    "cost = t.cost + d.cost, tokens = t.tokens + d.tokens"
  /** Adds to each job's counts the changes `rows` gives (job_id, total, one column per status, cost, tokens). */
  const add = (rows: string) =>
    `UPDATE effect_batch_job_totals t SET ${added}
      FROM (SELECT job_id, ${sums} FROM (${rows}) r GROUP BY job_id) d WHERE t.job_id = d.job_id;`
  const each = (table: string, sign: 1 | -1) =>
    `SELECT job_id, ${sign} AS total, ${perStatus((status) => `${sign} * ${is("status", status)} AS ${status}`)}, ` +
    `${sign} * cost AS cost, ${sign} * tokens AS tokens FROM ${table}`
  // An update's change, item by item: a cost that does not change adds nothing (no rounding creeps in).
  const changed = `SELECT n.job_id, 0 AS total, ${perStatus((status) => `${is("n.status", status)} - ${is("o.status", status)} AS ${status}`)}, ` +
    "n.cost - o.cost AS cost, n.tokens - o.tokens AS tokens FROM new_items n JOIN old_items o ON o.job_id = n.job_id AND o.idx = n.idx"
  const triggers = [
    ["effect_batch_jobs_counted", "INSERT", "effect_batch_jobs", "NEW TABLE AS new_jobs", "effect_batch_jobs_counted"],
    ["effect_batch_jobs_uncounted", "DELETE", "effect_batch_jobs", "OLD TABLE AS old_jobs", "effect_batch_jobs_counted"],
    ["effect_batch_job_items_counted", "INSERT", "effect_batch_job_items", "NEW TABLE AS new_items", "effect_batch_job_items_counted"],
    ["effect_batch_job_items_recounted", "UPDATE", "effect_batch_job_items", "OLD TABLE AS old_items NEW TABLE AS new_items", "effect_batch_job_items_counted"],
    ["effect_batch_job_items_uncounted", "DELETE", "effect_batch_job_items", "OLD TABLE AS old_items", "effect_batch_job_items_counted"]
  ] as const
  return [
    `CREATE OR REPLACE FUNCTION effect_batch_jobs_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO effect_batch_job_totals (job_id) SELECT id FROM new_jobs ON CONFLICT (job_id) DO NOTHING;
      ELSE
        DELETE FROM effect_batch_job_totals t USING old_jobs o WHERE t.job_id = o.id;
      END IF;
      RETURN NULL;
    END $$`,
    `CREATE OR REPLACE FUNCTION effect_batch_job_items_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        ${add(each("new_items", 1))}
      ELSIF TG_OP = 'UPDATE' THEN
        ${add(changed)}
      ELSE
        ${add(each("old_items", -1))}
      END IF;
      RETURN NULL;
    END $$`,
    // PostgreSQL before 14 has no CREATE OR REPLACE TRIGGER.
    ...triggers.flatMap(([name, event, table, transition, fn]) => [
      `DROP TRIGGER IF EXISTS ${name} ON ${table}`,
      `CREATE TRIGGER ${name} AFTER ${event} ON ${table} REFERENCING ${transition} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`
    ])
  ]
})()

/** The counts of the jobs already in the database, once, when the triggers start keeping them (any found are recounted). */
const countOnce = [
  "DELETE FROM effect_batch_job_totals",
  `INSERT INTO effect_batch_job_totals (job_id, total, ${statuses.join(", ")}, cost, tokens)
    SELECT j.id, COUNT(i.job_id), ${perStatus((status) => `SUM(CASE WHEN i.status = '${status}' THEN 1 ELSE 0 END)`)},
    COALESCE(SUM(i.cost), 0), COALESCE(SUM(i.tokens), 0)
    FROM effect_batch_jobs j LEFT JOIN effect_batch_job_items i ON i.job_id = j.id GROUP BY j.id`
]

const tables = [
  `CREATE TABLE IF NOT EXISTS ${metaTable} (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
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
  timeTable,
  `CREATE TABLE IF NOT EXISTS effect_batch_job_events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
  )`
]

/** Columns added before the schema had a version: a database made before them gets them when it is versioned. */
const addedColumns: ReadonlyArray<{ readonly table: string, readonly column: string, readonly type: string }> = [
  { table: "effect_batch_jobs", column: "payload_hash", type: "TEXT" }
]

// Drivers answer BIGINT and aggregates as a number (SQLite) or a string (PostgreSQL).
type Num = number | string | bigint | null
const num = (value: Num): number => value === null ? 0 : typeof value === "number" ? value : Number(value)
const optNum = (value: Num): number | undefined => value === null ? undefined : num(value)

// What is written is `JSON.stringify` of a value of the Schema's type: these Schemas encode to themselves.
const decodeJson = <A, I>(schema: Schema.Schema<A, I>) => Schema.decodeUnknownSync(Schema.parseJson(schema))
const decodeSpec = decodeJson(Job.Spec)
const decodeMetadata = decodeJson(Job.Metadata)
const decodeInput = decodeJson(Job.ItemInput)
const decodeCompletion = decodeJson(Job.Completion)
const decodeFailure = decodeJson(Job.Failure)
const decodeSkip = decodeJson(Job.Skip)
const decodeState = Schema.decodeUnknownSync(Job.JobState)
const decodeEventType = Schema.decodeUnknownSync(Job.EventType)

interface JobRecord {
  readonly id: string
  readonly tenant: string
  readonly idempotency_key: string | null
  readonly payload_hash: string | null
  readonly state: string
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

const jobOf = (row: JobRecord): JobStore.JobRow => ({
  id: row.id,
  tenant: row.tenant,
  idempotencyKey: row.idempotency_key ?? undefined,
  payloadHash: row.payload_hash ?? undefined,
  state: decodeState(row.state),
  reason: row.reason ?? undefined,
  profile: row.profile,
  model: row.model,
  priority: num(row.priority),
  spec: decodeSpec(row.spec),
  metadata: decodeMetadata(row.metadata),
  total: num(row.total),
  round: num(row.round),
  createdAt: num(row.created_at),
  startedAt: optNum(row.started_at),
  finishedAt: optNum(row.finished_at)
})

interface ItemRecord {
  readonly idx: Num
  readonly input: string
  readonly status: string
  readonly output: string
  readonly error_class: string | null
  readonly attempts: Num
  readonly duration_ms: Num
  readonly cost: Num
  readonly tokens: Num
}

const settledOf = (row: ItemRecord): JobStore.SettledItem => {
  const common = {
    index: num(row.idx),
    input: decodeInput(row.input),
    attempts: num(row.attempts),
    durationMs: num(row.duration_ms),
    cost: num(row.cost),
    tokens: num(row.tokens)
  }
  switch (row.status) {
    case "succeeded":
      return { ...common, status: "succeeded", output: decodeCompletion(row.output) }
    case "failed": {
      const output = decodeFailure(row.output)
      return { ...common, status: "failed", output, errorClass: row.error_class ?? output.class }
    }
    case "skipped":
      return { ...common, status: "skipped", output: decodeSkip(row.output) }
    default:
      throw new Error(`item ${common.index} has the unknown status ${JSON.stringify(row.status)}`)
  }
}

// 500 rows of up to 8 values: far within SQLite's and PostgreSQL's parameter limits.
const rowsPerStatement = 500
/** Jobs read by one statement of a read over several (`totalsOf`, `timeSpentOf`). */
const idsPerStatement = 500

/**
 * The store on the `SqlClient` in context; creates or upgrades its tables
 * (see the module's description).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<JobStore.Store, JobStore.JobStoreError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const wrap = (operation: string) => <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, JobStore.JobStoreError> =>
    Effect.mapError(effect, (cause) => new JobStore.JobStoreError({ operation, cause }))
  /** Rows to values, a row that does not decode failing the operation. */
  const decoded = <R, A>(rows: ReadonlyArray<R>, f: (row: R) => A) => Effect.try({ try: () => rows.map(f), catch: (cause) => cause })

  const columnsOf = (table: string) =>
    sql.onDialectOrElse({
      pg: () =>
        sql<{ readonly name: string }>`SELECT column_name AS name FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = ${table}`,
      orElse: () => sql<{ readonly name: string }>`SELECT name FROM pragma_table_info(${table})`
    }).pipe(Effect.map((rows) => rows.map((row) => row.name)))

  const storedVersion = Effect.gen(function*() {
    if ((yield* columnsOf(metaTable)).length === 0) return undefined
    const rows = yield* sql<{ readonly value: string }>`SELECT value FROM ${sql(metaTable)} WHERE key = ${versionKey}`
    return rows[0]?.value
  })

  /** Version 0 (no version kept) to 1: the tables as they are made today, the payload hash column on older ones. */
  const toVersion1 = Effect.gen(function*() {
    for (const statement of tables) yield* sql.unsafe(statement)
    for (const { column, table, type } of addedColumns) {
      if (!(yield* columnsOf(table)).includes(column)) yield* sql.unsafe(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`)
    }
  })
  /** Version 1 to 2: the table of time spent. */
  const toVersion2 = Effect.asVoid(sql.unsafe(timeTable))
  /**
   * Version 2 to 3: each job's counts, kept by triggers and counted once from the items. The triggers come before
   * the count: on PostgreSQL making them locks the items against writes until this transaction commits, so no
   * outcome slips between the count and the triggers.
   */
  const toVersion3 = Effect.gen(function*() {
    yield* sql.unsafe(totalsTable)
    const triggers = sql.onDialectOrElse({ pg: () => pgTotalsTriggers, orElse: () => sqliteTotalsTriggers })
    for (const statement of [...triggers, ...countOnce]) yield* sql.unsafe(statement)
  })
  /** `migrations[v]` brings a database from version `v` to `v + 1`. */
  const migrations: ReadonlyArray<Effect.Effect<void, SqlError>> = [toVersion1, toVersion2, toVersion3]

  const versionOf = Effect.gen(function*() {
    const found = yield* storedVersion
    const version = found === undefined ? 0 : /^\d{1,6}$/.test(found) ? Number(found) : Number.NaN
    // Refused before anything is written: a newer effect-batch's database stays as it was.
    if (!(version <= schemaVersion)) return yield* new UnsupportedSchemaVersion({ found: found!, supported: schemaVersion })
    return version
  })
  // Processes starting together on one PostgreSQL database (a service's API and runners) take turns, each
  // reading the version again once it holds the lock; SQLite's writer lock does the same for its transaction.
  const setupLock = sql.onDialectOrElse({
    pg: () => Effect.asVoid(sql`SELECT pg_advisory_xact_lock(${setupLockKey[0]}, ${setupLockKey[1]})`),
    orElse: () => Effect.void
  })
  const setup = Effect.gen(function*() {
    const found = yield* versionOf
    // NORMAL, as SqlCheckpointStore: in WAL mode a commit then costs no fsync (one per commit blocked the event loop
    // about 0.4 ms, and a job service commits a dozen times per job), and survives a crash of the process, though
    // not necessarily of the machine. One connection: the workflow engine's tables on this database get it too.
    yield* sql.onDialectOrElse({
      sqlite: () => Effect.zipRight(sql.unsafe("PRAGMA journal_mode = WAL"), sql.unsafe("PRAGMA synchronous = NORMAL")),
      orElse: () => Effect.void
    })
    if (found === schemaVersion) return
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* setupLock
      const version = yield* versionOf
      if (version === schemaVersion) return
      for (let v = version; v < schemaVersion; v++) yield* migrations[v]!
      yield* sql`INSERT INTO ${sql(metaTable)} (key, value) VALUES (${versionKey}, ${String(schemaVersion)})
        ON CONFLICT (key) DO UPDATE SET value = excluded.value`
    }))
  })
  yield* setup.pipe(wrap("setup"))

  const unfinishedStates = Job.JobState.literals.filter((state) => !Job.isTerminal(state))

  const get: JobStore.Store["get"] = (id, tenant) =>
    (tenant === undefined
      ? sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE id = ${id}`
      : sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE id = ${id} AND tenant = ${tenant}`).pipe(
      Effect.flatMap((rows) => decoded(rows, jobOf)),
      Effect.map((jobs) => jobs[0]),
      wrap("get")
    )

  const insert: JobStore.Store["insert"] = (job, items, events = []) =>
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
        return { job: (yield* decoded(existing, jobOf))[0]!, created: false }
      }
      for (let from = 0; from < items.length; from += rowsPerStatement) {
        const rows = items.slice(from, from + rowsPerStatement).map((item, i) => ({
          job_id: job.id,
          idx: from + i,
          input: JSON.stringify(item.input),
          status: item.rejected === undefined ? null : "failed",
          output: item.rejected === undefined ? null : JSON.stringify(JobStore.rejectedOutput(item.rejected)),
          error_class: item.rejected === undefined ? null : JobStore.rejectedClass,
          settled_at: item.rejected === undefined ? null : job.createdAt
        }))
        yield* sql`INSERT INTO effect_batch_job_items ${sql.insert(rows)}`
      }
      if (events.length > 0) {
        const rows = events.map((e, i) => ({ job_id: job.id, seq: i + 1, type: e.type, data: e.data, at: e.at }))
        yield* sql`INSERT INTO effect_batch_job_events ${sql.insert(rows)}`
      }
      const created: JobStore.JobRow = { ...job, state: "queued", reason: undefined, round: 0, startedAt: undefined, finishedAt: undefined }
      return { job: created, created: true }
    })).pipe(wrap("insert"))

  const list: JobStore.Store["list"] = ({ before, limit, state, tenant }) => {
    const stateFilter = state === undefined ? sql`` : sql`AND state = ${state}`
    const cursor = before === undefined
      ? sql``
      : sql`AND (created_at < ${before.createdAt} OR (created_at = ${before.createdAt} AND id < ${before.id}))`
    return sql<JobRecord>`SELECT * FROM effect_batch_jobs WHERE tenant = ${tenant} ${stateFilter} ${cursor}
      ORDER BY created_at DESC, id DESC LIMIT ${limit}`.pipe(Effect.flatMap((rows) => decoded(rows, jobOf)), wrap("list"))
  }

  const setState: JobStore.Store["setState"] = (id, state, { now, reason }) => {
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

  const pending: JobStore.Store["pending"] = (id, from, to) =>
    sql<{ readonly idx: Num, readonly input: string }>`SELECT idx, input FROM effect_batch_job_items
      WHERE job_id = ${id} AND idx >= ${from} AND idx < ${to} AND status IS NULL ORDER BY idx`.pipe(
        Effect.flatMap((rows) => decoded(rows, (row) => ({ index: num(row.idx), input: decodeInput(row.input) }))),
        wrap("pending")
      )

  const inputs: JobStore.Store["inputs"] = (id, from, to) =>
    sql<{ readonly idx: Num, readonly input: string, readonly status: string | null }>`SELECT idx, input, status
      FROM effect_batch_job_items WHERE job_id = ${id} AND idx >= ${from} AND idx < ${to} ORDER BY idx`.pipe(
        Effect.flatMap((rows) =>
          decoded(rows, (row) => ({ index: num(row.idx), input: decodeInput(row.input), pending: row.status === null }))
        ),
        wrap("inputs")
      )

  // One UPDATE … FROM (VALUES …) per `rowsPerStatement` outcomes, of any jobs (SQLite ≥ 3.33 and PostgreSQL
  // both read it, with the VALUES columns named column1…; the casts give PostgreSQL their types): a statement
  // per outcome cost 2-3× more.
  const updateRows = (rows: ReadonlyArray<readonly [jobId: string, outcome: JobStore.Outcome]>, now: number) =>
    sql`UPDATE effect_batch_job_items SET status = v.column2, output = v.column3, error_class = v.column4,
      attempts = v.column5, duration_ms = v.column6, cost = v.column7, tokens = v.column8, settled_at = ${now}
      FROM (VALUES ${
        sql.csv(rows.map(([jobId, o]) =>
          sql`(CAST(${o.index} AS BIGINT), ${o.status}, ${JSON.stringify(o.output)}, ${o.status === "failed" ? o.errorClass : null},
          CAST(${o.attempts} AS INTEGER), CAST(${o.durationMs} AS DOUBLE PRECISION), CAST(${o.cost} AS DOUBLE PRECISION),
          CAST(${o.tokens} AS BIGINT), CAST(${jobId} AS TEXT))`
        ))
      }) AS v WHERE effect_batch_job_items.job_id = v.column9 AND effect_batch_job_items.idx = v.column1`

  const recordAll: JobStore.Store["recordAll"] = (groups, now) => {
    const rows = groups.flatMap(({ jobId, outcomes }) => outcomes.map((outcome) => [jobId, outcome] as const))
    if (rows.length === 0) return Effect.void
    if (rows.length <= rowsPerStatement) return Effect.asVoid(updateRows(rows, now)).pipe(wrap("record"))
    return sql.withTransaction(Effect.forEach(Arr.chunksOf(rows, rowsPerStatement), (part) => updateRows(part, now), { discard: true }))
      .pipe(wrap("record"))
  }
  const record: JobStore.Store["record"] = (id, outcomes, now) => recordAll([{ jobId: id, outcomes }], now)

  /** Reads of several jobs, `idsPerStatement` at a time, merged into one map. */
  const byIds = <A, E>(ids: ReadonlyArray<string>, read: (part: ReadonlyArray<string>) => Effect.Effect<Map<string, A>, E>) =>
    Effect.map(
      Effect.forEach(Arr.chunksOf(Arr.dedupe(ids), idsPerStatement), read),
      (parts): ReadonlyMap<string, A> => parts.length === 1 ? parts[0]! : new Map(parts.flatMap((part) => Array.from(part)))
    )

  const readTotals = (ids: ReadonlyArray<string>) =>
    byIds(ids, (part) =>
      Effect.map(
        sql<{
          readonly job_id: string
          readonly total: Num
          readonly succeeded: Num
          readonly failed: Num
          readonly skipped: Num
          readonly cost: Num
          readonly tokens: Num
        }>`SELECT job_id, total, succeeded, failed, skipped, cost, tokens FROM effect_batch_job_totals
          WHERE ${sql.in("job_id", part)}`,
        (rows) =>
          new Map(rows.map((row): [string, JobStore.Totals] => {
            const [total, succeeded, failed, skipped] = [num(row.total), num(row.succeeded), num(row.failed), num(row.skipped)]
            const counts = { total, succeeded, failed, skipped, pending: total - succeeded - failed - skipped }
            return [row.job_id, { ...counts, cost: num(row.cost), tokens: num(row.tokens) }]
          }))
      ))
  // Decoded as `get` decodes a job's state: a state this version does not know is an error, not a value passed on.
  const statesOf: JobStore.Store["statesOf"] = (ids) =>
    byIds(ids, (part) =>
      sql<{ readonly id: string, readonly state: string }>`SELECT id, state FROM effect_batch_jobs WHERE ${sql.in("id", part)}`.pipe(
        Effect.flatMap((rows) => decoded(rows, (row) => [row.id, decodeState(row.state)] as const)),
        Effect.map((entries) => new Map(entries))
      )).pipe(wrap("statesOf"))
  const totalsOf: JobStore.Store["totalsOf"] = (ids) => wrap("totalsOf")(readTotals(ids))
  const totals: JobStore.Store["totals"] = (id) =>
    Effect.map(readTotals([id]), (found) => found.get(id) ?? JobStore.noTotals).pipe(wrap("totals"))

  const settled: JobStore.Store["settled"] = (id, after, limit) =>
    sql<ItemRecord>`SELECT idx, input, status, output, error_class, attempts, duration_ms, cost, tokens
      FROM effect_batch_job_items WHERE job_id = ${id} AND idx > ${after} AND status IS NOT NULL
      ORDER BY idx LIMIT ${limit}`.pipe(Effect.flatMap((rows) => decoded(rows, settledOf)), wrap("settled"))

  const deadLetters: JobStore.Store["deadLetters"] = (id) =>
    sql<ItemRecord>`SELECT idx, input, status, output, error_class, attempts, duration_ms, cost, tokens
      FROM effect_batch_job_items WHERE job_id = ${id} AND status = 'failed' ORDER BY idx`.pipe(
        Effect.flatMap((rows) =>
          decoded(rows, (row): JobStore.DeadLetter => {
            const item = settledOf(row)
            if (item.status !== "failed") throw new Error(`item ${item.index} is not failed`)
            return item
          })
        ),
        wrap("deadLetters")
      )

  const skipPending: JobStore.Store["skipPending"] = (id, reason, now) =>
    sql<{ readonly idx: Num }>`UPDATE effect_batch_job_items SET status = 'skipped', output = ${JSON.stringify({ reason })},
      settled_at = ${now} WHERE job_id = ${id} AND status IS NULL RETURNING idx`.pipe(
        Effect.map((rows) => rows.length),
        wrap("skipPending")
      )

  const reopenFailed: JobStore.Store["reopenFailed"] = (id, now) =>
    sql.withTransaction(Effect.gen(function*() {
      // Only a job the transition table lets move to `queued`: checked by both statements.
      const sources = sql.in(Job.sourcesOf("queued"))
      const reopened = yield* sql<{ readonly idx: Num }>`UPDATE effect_batch_job_items
        SET status = NULL, output = NULL, error_class = NULL, settled_at = NULL
        WHERE job_id = ${id} AND status = 'failed' AND error_class <> ${JobStore.rejectedClass}
        AND EXISTS (SELECT 1 FROM effect_batch_jobs WHERE id = ${id} AND state IN ${sources}) RETURNING idx`
      if (reopened.length > 0) {
        yield* sql`UPDATE effect_batch_jobs SET round = round + 1, state = 'queued', reason = NULL, finished_at = NULL,
          updated_at = ${now} WHERE id = ${id} AND state IN ${sources}`
      }
      return reopened.length
    })).pipe(wrap("reopenFailed"))

  /** Each job's highest event seq (a job without events is absent). */
  const readLastSeqs = (ids: ReadonlyArray<string>) =>
    byIds(ids, (part) =>
      Effect.map(
        sql<{ readonly job_id: string, readonly seq: Num }>`SELECT job_id, MAX(seq) AS seq
          FROM effect_batch_job_events WHERE ${sql.in("job_id", part)} GROUP BY job_id`,
        (rows) => new Map(rows.map((row) => [row.job_id, num(row.seq)]))
      ))
  const lastSeq: JobStore.Store["lastSeq"] = (id) => Effect.map(readLastSeqs([id]), (found) => found.get(id) ?? 0).pipe(wrap("lastSeq"))
  const lastSeqOf: JobStore.Store["lastSeqOf"] = (ids) => wrap("lastSeqOf")(readLastSeqs(ids))

  // Numbered here, not by the publisher: several service processes publish events of one job (the API its
  // `queued`, a runner the rest). One transaction for every job of a flush (round trips, not rows, are what
  // cost on PostgreSQL): on PostgreSQL the jobs' rows are locked for it, in id order, so appends to one job
  // take turns; SQLite has one writer at a time anyway.
  const appendEvents: JobStore.Store["appendEvents"] = (batch) =>
    batch.size === 0 ? Effect.succeed(new Map()) : sql.withTransaction(Effect.gen(function*() {
      const ids = Array.from(batch.keys()).sort()
      const known = yield* sql.onDialectOrElse({
        pg: () => sql<{ readonly id: string }>`SELECT id FROM effect_batch_jobs WHERE id IN ${sql.in(ids)} ORDER BY id FOR UPDATE`,
        orElse: () => sql<{ readonly id: string }>`SELECT id FROM effect_batch_jobs WHERE id IN ${sql.in(ids)}`
      })
      const lastOf = yield* readLastSeqs(ids)
      const lasts = new Map<string, number>()
      const rows: Array<{ job_id: string, seq: number, type: string, data: string, at: number }> = []
      for (const { id } of known) {
        let seq = lastOf.get(id) ?? 0
        for (const e of batch.get(id)!) rows.push({ job_id: id, seq: ++seq, type: e.type, data: e.data, at: e.at })
        lasts.set(id, seq)
      }
      if (rows.length > 0) yield* sql`INSERT INTO effect_batch_job_events ${sql.insert(rows)}`
      return lasts
    })).pipe(wrap("appendEvents"))

  const events: JobStore.Store["events"] = (id, after) =>
    sql<{ readonly seq: Num, readonly type: string, readonly data: string }>`SELECT seq, type, data
      FROM effect_batch_job_events WHERE job_id = ${id} AND seq > ${after} ORDER BY seq`.pipe(
        Effect.flatMap((rows) => decoded(rows, (row) => ({ seq: num(row.seq), type: decodeEventType(row.type), data: row.data }))),
        wrap("events")
      )

  const lastEventOf: JobStore.Store["lastEventOf"] = (ids, type) =>
    byIds(ids, (part) =>
      sql<{ readonly job_id: string, readonly seq: Num, readonly type: string, readonly data: string }>`
        SELECT e.job_id, e.seq, e.type, e.data FROM effect_batch_job_events e JOIN (
          SELECT job_id, MAX(seq) AS seq FROM effect_batch_job_events WHERE ${sql.in("job_id", part)} AND type = ${type} GROUP BY job_id
        ) last ON e.job_id = last.job_id AND e.seq = last.seq`.pipe(
              Effect.flatMap((rows) =>
                decoded(rows, (row): [string, JobStore.StoredEvent] => [
                  row.job_id,
                  { seq: num(row.seq), type: decodeEventType(row.type), data: row.data }
                ])
              ),
              Effect.map((entries) => new Map(entries))
            )).pipe(wrap("lastEventOf"))

  const unfinished: JobStore.Store["unfinished"] = sql<JobRecord>`SELECT * FROM effect_batch_jobs
    WHERE state IN ${sql.in(unfinishedStates)} ORDER BY created_at, id`.pipe(
      Effect.flatMap((rows) => decoded(rows, jobOf)),
      wrap("unfinished")
    )

  const census: JobStore.Store["census"] = Effect.gen(function*() {
    const states = yield* sql<{ readonly state: string, readonly n: Num }>`SELECT state, COUNT(*) AS n FROM effect_batch_jobs
      GROUP BY state`
    const pending = yield* sql<{ readonly n: Num }>`SELECT SUM(t.total - t.succeeded - t.failed - t.skipped) AS n
      FROM effect_batch_job_totals t JOIN effect_batch_jobs j ON j.id = t.job_id WHERE j.state IN ${sql.in(unfinishedStates)}`
    const jobs = JobStore.emptyCensus()
    for (const row of states) if (row.state in jobs) jobs[row.state as Job.JobState] = num(row.n)
    return { jobs, pendingItems: num(pending[0]?.n ?? 0) }
  }).pipe(wrap("census"))

  const addTimeSpent: JobStore.Store["addTimeSpent"] = (id, s) =>
    sql`INSERT INTO effect_batch_job_time (job_id, items, queued_ms, rate_limit_ms, gate_ms, in_flight_ms, backoff_ms, wall_ms)
      VALUES (${id}, ${s.items}, ${s.queuedMs}, ${s.rateLimitMs}, ${s.gateMs}, ${s.inFlightMs}, ${s.backoffMs}, ${s.wallMs})
      ON CONFLICT (job_id) DO UPDATE SET items = effect_batch_job_time.items + excluded.items,
        queued_ms = effect_batch_job_time.queued_ms + excluded.queued_ms,
        rate_limit_ms = effect_batch_job_time.rate_limit_ms + excluded.rate_limit_ms,
        gate_ms = effect_batch_job_time.gate_ms + excluded.gate_ms,
        in_flight_ms = effect_batch_job_time.in_flight_ms + excluded.in_flight_ms,
        backoff_ms = effect_batch_job_time.backoff_ms + excluded.backoff_ms,
        wall_ms = effect_batch_job_time.wall_ms + excluded.wall_ms`.pipe(Effect.asVoid, wrap("addTimeSpent"))

  const readTimeSpent = (ids: ReadonlyArray<string>) =>
    byIds(ids, (part) =>
      Effect.map(
        sql<{
          readonly job_id: string
          readonly items: Num
          readonly queued_ms: Num
          readonly rate_limit_ms: Num
          readonly gate_ms: Num
          readonly in_flight_ms: Num
          readonly backoff_ms: Num
          readonly wall_ms: Num
        }>`SELECT job_id, items, queued_ms, rate_limit_ms, gate_ms, in_flight_ms, backoff_ms, wall_ms FROM effect_batch_job_time
          WHERE ${sql.in("job_id", part)}`,
        (rows) =>
          new Map(rows.map((row): [string, JobStore.TimeSpent] => [row.job_id, {
            items: num(row.items),
            queuedMs: num(row.queued_ms),
            rateLimitMs: num(row.rate_limit_ms),
            gateMs: num(row.gate_ms),
            inFlightMs: num(row.in_flight_ms),
            backoffMs: num(row.backoff_ms),
            wallMs: num(row.wall_ms)
          }]))
      ))
  const timeSpentOf: JobStore.Store["timeSpentOf"] = (ids) => wrap("timeSpentOf")(readTimeSpent(ids))
  const timeSpent: JobStore.Store["timeSpent"] = (id) => Effect.map(readTimeSpent([id]), (found) => found.get(id)).pipe(wrap("timeSpent"))

  return {
    addTimeSpent,
    timeSpent,
    timeSpentOf,
    census,
    insert,
    get,
    statesOf,
    list,
    setState,
    pending,
    inputs,
    record,
    recordAll,
    totals,
    totalsOf,
    settled,
    deadLetters,
    skipPending,
    reopenFailed,
    appendEvents,
    events,
    lastSeq,
    lastSeqOf,
    lastEventOf,
    unfinished
  } satisfies JobStore.Store
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobStore.JobStore, JobStore.JobStoreError, SqlClient.SqlClient> = Layer.effect(JobStore.JobStore, make)
