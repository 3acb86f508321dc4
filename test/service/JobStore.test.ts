/**
 * The job store on SQLite and on PostgreSQL (when DATABASE_URL is set; each
 * test in a database made for it): items and outcomes, totals, results in
 * order, dead letters, skipping and reopening — including groups larger than
 * one statement takes —, idempotency keys under concurrent inserts, and a
 * database made by the version before payload hashes.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Job from "../../src/service/Job.js"
import * as JobStore from "../../src/service/JobStore.js"

const sqlite = () => SqliteClient.layer({ filename: join(mkdtempSync(join(tmpdir(), "effect-batch-jobstore-")), "jobs.db") })

// CI sets DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; without it the PostgreSQL suite is reported as skipped.
const url = process.env.DATABASE_URL
const databases: Array<string> = []
const admin = () => PgClient.layer({ url: Redacted.make(url!), maxConnections: 1 })
const adminSql = (statement: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(Effect.provide(admin()), Effect.orDie)
const postgres = () =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const database = `effect_batch_jobstore_${process.pid}_${Date.now()}_${databases.length}`
    databases.push(database)
    yield* adminSql(`CREATE DATABASE ${database}`)
    const parsed = new URL(url!)
    parsed.pathname = `/${database}`
    return PgClient.layer({ url: Redacted.make(parsed.toString()), maxConnections: 4 })
  }))
afterAll(async () => {
  for (const database of databases) await Effect.runPromise(adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))
})

const job = (id: string, total: number) => ({
  id,
  tenant: "t",
  idempotencyKey: undefined,
  payloadHash: undefined,
  profile: "p",
  model: "m",
  priority: 0,
  spec: {},
  metadata: {},
  total,
  createdAt: 1000
})

const outcome = (index: number, status: JobStore.OutcomeStatus): JobStore.Outcome => ({
  index,
  status,
  output: JSON.stringify(status === "succeeded" ? { content: `answer ${index}` } : { class: "Permanent", message: `bad ${index}` }),
  errorClass: status === "failed" ? "Permanent" : undefined,
  attempts: 1 + (index % 3),
  durationMs: index / 10,
  cost: status === "succeeded" ? 0.001 : 0,
  tokens: status === "succeeded" ? 10 : 0
})

/** Moves a queued job to `state` by allowed moves only. */
const bringTo = (store: JobStore.Store, id: string, state: Job.JobState) =>
  Effect.gen(function*() {
    const path: ReadonlyArray<Job.JobState> = state === "queued"
      ? []
      : state === "cancelled" || state === "running"
        ? [state]
        : ["running", state]
    for (const step of path) expect(yield* store.setState(id, step, { now: 8000 })).toBe(true)
  })

/** The jobs table as the version before payload hashes made it. */
const tableWithoutPayloadHash = `CREATE TABLE effect_batch_jobs (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  idempotency_key TEXT,
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
)`

const suite = (name: string, database: () => Layer.Layer<SqlClient.SqlClient, unknown>, skip = false) =>
  describe.skipIf(skip)(name, () => {
    it.effect("1 200 outcomes in one call (three statements, one transaction): totals, order, dead letters, skip, reopen", () =>
      Effect.gen(function*() {
        const store = yield* JobStore.make
        const items = Array.from({ length: 1300 }, (_, i): JobStore.NewItem =>
          i === 5 ? { input: JSON.stringify("{broken"), rejected: "in.jsonl:6: invalid JSON" } : { input: JSON.stringify(`prompt ${i}`) })
        const { created } = yield* store.insert(job("job_a", 1300), items)
        expect(created).toBe(true)
        expect((yield* store.pending("job_a", 0, 10)).map((p) => p.index)).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9])
        const outcomes = Array.from({ length: 1200 }, (_, i) => i).filter((i) => i !== 5)
          .map((i) => outcome(i, i % 100 === 7 ? "failed" : "succeeded"))
        yield* store.record("job_a", outcomes, 2000)
        const totals = yield* store.totals("job_a")
        expect(totals).toMatchObject({ total: 1300, succeeded: 1187, failed: 13, skipped: 0, pending: 100 })
        expect(totals.cost).toBeCloseTo(1.187, 9)
        expect(totals.tokens).toBe(11870)
        const settled = yield* store.settled("job_a", -1, 2000)
        expect(settled.map((s) => s.index)).toEqual(Array.from({ length: 1200 }, (_, i) => i))
        expect(settled[42]).toMatchObject({ index: 42, status: "succeeded", attempts: 1, durationMs: 4.2, input: JSON.stringify("prompt 42") })
        const dead = yield* store.deadLetters("job_a")
        expect(dead.map((d) => d.errorClass)).toEqual(["Rejected", ...Array(12).fill("Permanent")])
        expect(yield* store.skipPending("job_a", "cancelled", 3000)).toBe(100)
        expect((yield* store.totals("job_a")).skipped).toBe(100)
        // A job is replayed once it has ended.
        expect(yield* store.setState("job_a", "running", { now: 2000 })).toBe(true)
        expect(yield* store.setState("job_a", "cancelled", { now: 3000, reason: "cancelled" })).toBe(true)
        // Reopening takes the Permanent failures back, never the rejected line.
        expect(yield* store.reopenFailed("job_a", 4000)).toBe(12)
        const reopened = yield* store.get("job_a")
        expect(reopened).toMatchObject({ state: "queued", round: 1, reason: undefined, startedAt: 2000, finishedAt: undefined })
        expect((yield* store.pending("job_a", 0, 1300)).map((p) => p.index)).toEqual(outcomes.filter((o) => o.status === "failed").map((o) => o.index))
      }).pipe(Effect.provide(database())))

    it.effect("an idempotency key names one job per tenant, kept with its payload hash; states move unless guarded", () =>
      Effect.gen(function*() {
        const store = yield* JobStore.make
        const first = yield* store.insert({ ...job("job_b", 1), idempotencyKey: "k", payloadHash: "h1" }, [{ input: "\"x\"" }])
        expect(first.job.payloadHash).toBe("h1")
        // Another payload under the key: the store answers the first job with its hash; the caller judges.
        const again = yield* store.insert({ ...job("job_c", 1), idempotencyKey: "k", payloadHash: "h2" }, [{ input: "\"y\"" }])
        expect([first.created, again.created, again.job.id, again.job.payloadHash]).toEqual([true, false, "job_b", "h1"])
        expect(yield* store.get("job_c")).toBeUndefined()
        expect((yield* store.totals("job_b")).total).toBe(1)
        const otherTenant = yield* store.insert({ ...job("job_d", 1), tenant: "u", idempotencyKey: "k", payloadHash: "h2" }, [{ input: "\"x\"" }])
        expect(otherTenant.created).toBe(true)
        expect(yield* store.get("job_b", "u")).toBeUndefined()
        expect(yield* store.setState("job_b", "cancelled", { now: 5000, reason: "asked" })).toBe(true)
        expect(yield* store.setState("job_b", "finished", { now: 6000 })).toBe(false)
        expect(yield* store.get("job_b")).toMatchObject({ state: "cancelled", reason: "asked", finishedAt: 5000 })
        expect((yield* store.unfinished).map((j) => j.id)).toEqual(["job_d"])
      }).pipe(Effect.provide(database())))

    it.effect("every move the transition table does not list is refused and changes nothing; every listed one is made", () =>
      Effect.gen(function*() {
        const store = yield* JobStore.make
        for (const from of Job.JobState.literals) {
          for (const to of Job.JobState.literals) {
            const id = `job_${from}_${to}`
            yield* store.insert(job(id, 1), [{ input: "\"x\"" }])
            yield* bringTo(store, id, from)
            const before = (yield* store.get(id))!
            expect(before.state).toBe(from)
            const moved = yield* store.setState(id, to, { now: 9000, reason: "moved" })
            expect([from, to, moved]).toEqual([from, to, Job.canMove(from, to)])
            const after = (yield* store.get(id))!
            if (moved) expect(after).toMatchObject({ state: to, reason: "moved" })
            else expect(after).toEqual(before)
          }
        }
        // A replay reopens only a job that ended.
        yield* store.record("job_running_queued", [outcome(0, "failed")], 9000)
        expect(yield* store.reopenFailed("job_running_queued", 9500)).toBe(0)
        expect((yield* store.get("job_running_queued"))?.state).toBe("running")
        expect((yield* store.totals("job_running_queued")).failed).toBe(1)
      }).pipe(Effect.provide(database())))

    it.effect("inserts with one key at once make one job; the others get it, without an error", () =>
      Effect.gen(function*() {
        const store = yield* JobStore.make
        // Enough items that the transactions overlap.
        const items = Array.from({ length: 2000 }, (_, i): JobStore.NewItem => ({ input: JSON.stringify(`p${i}`) }))
        for (let round = 0; round < 5; round++) {
          const ids = [0, 1, 2].map((i) => `job_race_${round}_${i}`)
          const results = yield* Effect.forEach(
            ids,
            (id) => store.insert({ ...job(id, items.length), idempotencyKey: `race-${round}`, payloadHash: "h" }, items),
            { concurrency: "unbounded" }
          )
          expect(results.filter((r) => r.created)).toHaveLength(1)
          const winner = results.find((r) => r.created)!.job.id
          expect(results.map((r) => r.job.id)).toEqual([winner, winner, winner])
          for (const id of ids) expect((yield* store.totals(id)).total).toBe(id === winner ? items.length : 0)
        }
      }).pipe(Effect.provide(database())))

    it.effect("a database made before payload hashes gets the column; its jobs are found by key, with no hash", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(tableWithoutPayloadHash)
        yield* sql.unsafe("CREATE UNIQUE INDEX effect_batch_jobs_idempotency ON effect_batch_jobs (tenant, idempotency_key)")
        yield* sql.unsafe(`INSERT INTO effect_batch_jobs (id, tenant, idempotency_key, state, profile, model, priority, spec,
          metadata, total, round, created_at, updated_at) VALUES ('job_old', 't', 'old-key', 'finished', 'p', 'm', 0, '{}', '{}', 0, 0, 500, 500)`)
        const store = yield* JobStore.make
        expect(yield* store.get("job_old")).toMatchObject({ id: "job_old", idempotencyKey: "old-key", payloadHash: undefined, state: "finished" })
        const again = yield* store.insert({ ...job("job_new", 1), idempotencyKey: "old-key", payloadHash: "h" }, [{ input: "\"x\"" }])
        expect([again.created, again.job.id, again.job.payloadHash]).toEqual([false, "job_old", undefined])
        const fresh = yield* store.insert({ ...job("job_fresh", 1), idempotencyKey: "new-key", payloadHash: "h" }, [{ input: "\"x\"" }])
        expect(fresh.created).toBe(true)
        expect((yield* store.get("job_fresh"))?.payloadHash).toBe("h")
        // Starting again on the migrated database changes nothing.
        yield* JobStore.make
        expect((yield* store.get("job_fresh"))?.payloadHash).toBe("h")
      }).pipe(Effect.provide(database())))
  })

suite("JobStore (SQLite)", sqlite)
suite("JobStore (PostgreSQL)", postgres, url === undefined)
