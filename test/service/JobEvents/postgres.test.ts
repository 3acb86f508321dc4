/**
 * JobEvents across two "processes" on one PostgreSQL database: two sets of
 * layers (each its own PgClient, JobSignals on LISTEN/NOTIFY, JobEvents) in
 * this test process. What one publishes, a subscriber of the other gets:
 * from the notice when the events fit in it, read from the store when they
 * do not, and from its poll when no notice came at all. CI sets
 * DATABASE_URL; without it the suite is reported as skipped.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Fiber, Layer, Queue, Redacted, Stream } from "effect"
import * as JobEvents from "../../../src/service/JobEvents.js"
import * as JobSignals from "../../../src/service/JobSignals.js"
import * as JobStore from "../../../src/service/JobStore.js"
import * as SqlJobStore from "../../../src/service/SqlJobStore.js"
import { job } from "../JobStore/conformance.js"

const url = process.env.DATABASE_URL
const database = `effect_batch_events_${process.pid}_${Date.now()}`
const adminSql = (statement: string) =>
  Effect.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url ?? "postgres://127.0.0.1/none"), maxConnections: 1 }))
  ))
let created = false
afterAll(async () => {
  if (created) await adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
})

/** One process's events: its own connections to the shared database. */
const processLayer = () =>
  Layer.suspend(() => {
    const parsed = new URL(url!)
    parsed.pathname = `/${database}`
    return JobEvents.layer.pipe(
      Layer.provideMerge(SqlJobStore.layer),
      Layer.provideMerge(JobSignals.layerPostgres),
      Layer.provideMerge(PgClient.layer({ url: Redacted.make(parsed.toString()), maxConnections: 4 }))
    )
  })

/** Builds a process in the test's scope. */
const startProcess = Effect.map(Layer.build(processLayer()), (context) => ({
  events: Context.get(context, JobEvents.JobEvents),
  store: Context.get(context, JobStore.JobStore),
  signals: Context.get(context, JobSignals.JobSignals)
}))

describe.skipIf(url === undefined)("JobEvents across processes on PostgreSQL", () => {
  it.live("a subscriber on one process gets the other's events once and in order: from notices, from the store when they do not fit", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => adminSql(`CREATE DATABASE ${database}`))
      created = true
      const a = yield* startProcess
      const b = yield* startProcess
      yield* a.store.insert(job("job_across", 1), [{ input: "x" }])
      const received = yield* b.events.subscribe("job_across", 0).pipe(Stream.take(4), Stream.runCollect, Effect.fork)
      const notices = yield* b.signals.subscribe("events")
      yield* Effect.sleep("100 millis")
      yield* a.events.publish("job_across", "state", { state: "queued" })
      yield* a.events.flush
      // Too big for a notice (PostgreSQL takes 8 000 bytes): B is told only its seq, and reads it back.
      yield* a.events.publish("job_across", "item-failed", { index: 0, errorClass: "Permanent", message: "x".repeat(9000), attempts: 1 })
      yield* a.events.flush
      yield* b.events.publish("job_across", "state", { state: "running" })
      yield* b.events.flush
      yield* a.events.publish("job_across", "limit", { limit: 4 })
      yield* a.events.flush
      const events = Chunk.toArray(yield* Fiber.join(received).pipe(Effect.timeout("10 seconds")))
      expect(events.map((e) => [e.seq, e.type])).toEqual([[1, "state"], [2, "item-failed"], [3, "state"], [4, "limit"]])
      expect(JSON.parse(events[1]!.data).message).toHaveLength(9000)
      // The notices as sent: each under PostgreSQL's limit; the big event's told only by its seq. Taken until the
      // last one has come: B's poll of the store can hand the subscriber event 4 before A's notice of it arrives.
      const sent: Array<string> = []
      while (!sent.some((n) => n.includes("\"last\":4"))) {
        const notice = yield* Queue.take(notices).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`no notice of event 4 in ${sent.join(" ")}`) }))
        if (notice.startsWith("{")) sent.push(notice)
      }
      expect(sent.every((n) => n.length < 8000)).toBe(true)
      const parts = sent.flatMap((n) => (JSON.parse(n) as { jobs: Array<{ last: number, events?: unknown }> }).jobs)
      expect(parts.map((p) => [p.last, p.events !== undefined])).toEqual([[1, true], [2, false], [3, true], [4, true]])
      // B keeps the latest of each type it saw, its own and those in A's notices.
      expect(b.events.latest("job_across", "limit")?.seq).toBe(4)
    }).pipe(Effect.scoped), 30_000)

  it.live("events stored without a notice (one lost) reach the subscriber by its poll", () =>
    Effect.gen(function*() {
      const b = yield* startProcess
      yield* b.store.insert(job("job_silent", 1), [{ input: "x" }])
      const received = yield* b.events.subscribe("job_silent", 0).pipe(Stream.take(2), Stream.runCollect, Effect.fork)
      yield* Effect.sleep("100 millis")
      // Appended straight to the store: no process sent a notice for them.
      yield* b.store.appendEvents(new Map([["job_silent", [
        { type: "state", data: "{\"state\":\"queued\",\"at\":1}", at: 1 },
        { type: "state", data: "{\"state\":\"running\",\"at\":2}", at: 2 }
      ]]]))
      const events = Chunk.toArray(yield* Fiber.join(received).pipe(Effect.timeout("10 seconds")))
      expect(events.map((e) => e.seq)).toEqual([1, 2])
    }).pipe(Effect.scoped), 30_000)
})
