/**
 * The same job service on PostgreSQL (the store and the workflow engine's
 * journal), in a database made for this run and dropped after it. CI sets
 * DATABASE_URL; without it the suite is reported as skipped.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { afterAll, beforeAll, describe, expect, layer } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as Job from "../../src/service/Job.js"
import { client, keyA, layer as serviceLayer, waitFor } from "../support/JobServiceTest.js"

const url = process.env.DATABASE_URL
const database = `effect_batch_service_${process.pid}_${Date.now()}`
const admin = PgClient.layer({ url: Redacted.make(url ?? "postgres://127.0.0.1/none"), maxConnections: 1 })
const adminSql = (statement: string) =>
  Effect.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(Effect.provide(admin)))

const databaseUrl = () => {
  const parsed = new URL(url!)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

describe.skipIf(url === undefined)("job service on PostgreSQL", () => {
  beforeAll(() => adminSql(`CREATE DATABASE ${database}`))
  afterAll(() => adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))

  const pg = Layer.suspend(() => PgClient.layer({ url: Redacted.make(databaseUrl()), maxConnections: 8 }))
  layer(serviceLayer({ sql: pg }), { excludeTestServices: true })("jobs", (it) => {
    it.effect("a job runs to finished with its results in order; dead letters replay", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const items = Array.from({ length: 230 }, (_, i) => (i % 50 === 7 ? `INVALID prompt ${i}` : `prompt ${i}: hello`))
        const { id } = yield* api.jobs.submit({ payload: { items }, headers: { "idempotency-key": "pg-1" } })
        const again = yield* api.jobs.submit({ payload: { items }, headers: { "idempotency-key": "pg-1" } })
        expect(again).toMatchObject({ id, created: false })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        expect(job.state).toBe("finished")
        expect(job.counts).toEqual({ total: 230, succeeded: 225, failed: 5, skipped: 0, pending: 0 })
        const { items: dead } = yield* api.jobs.deadLetters({ path: { id } })
        expect(dead.map((d) => d.index)).toEqual([7, 57, 107, 157, 207])
        yield* api.jobs.replay({ path: { id } })
        const replayed = yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.round === 1 && Job.isTerminal(j.state))
        expect(replayed.counts.failed).toBe(5)
        const page = yield* api.jobs.list({ urlParams: { state: "finished" } })
        expect(page.jobs.map((j) => j.id)).toEqual([id])
      }))

    it.effect("submits with one Idempotency-Key at once make one job; another body under it is refused", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const items = Array.from({ length: 500 }, (_, i) => `race prompt ${i}`)
        const submitted = yield* Effect.forEach(
          [1, 2, 3, 4],
          () => api.jobs.submit({ payload: { items }, headers: { "idempotency-key": "pg-race" } }),
          { concurrency: "unbounded" }
        )
        expect(new Set(submitted.map((s) => s.id)).size).toBe(1)
        expect(submitted.filter((s) => s.created)).toHaveLength(1)
        const reused = yield* api.jobs.submit({ payload: { items: ["another"] }, headers: { "idempotency-key": "pg-race" } }).pipe(Effect.flip)
        expect(reused).toMatchObject({ _tag: "IdempotencyKeyReused", key: "pg-race" })
        yield* waitFor(api.jobs.get({ path: { id: submitted[0]!.id } }), (j) => Job.isTerminal(j.state), "the job to end")
      }))
  })
})
