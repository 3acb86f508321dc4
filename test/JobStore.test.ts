/**
 * The job store on SQLite: items and outcomes, totals, results in order,
 * dead letters, skipping and reopening — including groups larger than one
 * statement takes.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as JobStore from "../src/JobStore.js"

const sqlite = () => SqliteClient.layer({ filename: join(mkdtempSync(join(tmpdir(), "effect-batch-jobstore-")), "jobs.db") })

const job = (id: string, total: number) => ({
  id,
  tenant: "t",
  idempotencyKey: undefined,
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

describe("JobStore (SQLite)", () => {
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
      // Reopening takes the Permanent failures back, never the rejected line.
      expect(yield* store.reopenFailed("job_a", 4000)).toBe(12)
      const reopened = yield* store.get("job_a")
      expect(reopened).toMatchObject({ state: "queued", round: 1 })
      expect((yield* store.pending("job_a", 0, 1300)).map((p) => p.index)).toEqual(outcomes.filter((o) => o.status === "failed").map((o) => o.index))
    }).pipe(Effect.provide(sqlite())))

  it.effect("an idempotency key names one job per tenant; states move unless guarded", () =>
    Effect.gen(function*() {
      const store = yield* JobStore.make
      const first = yield* store.insert({ ...job("job_b", 1), idempotencyKey: "k" }, [{ input: "\"x\"" }])
      const again = yield* store.insert({ ...job("job_c", 1), idempotencyKey: "k" }, [{ input: "\"x\"" }])
      expect([first.created, again.created, again.job.id]).toEqual([true, false, "job_b"])
      const otherTenant = yield* store.insert({ ...job("job_d", 1), tenant: "u", idempotencyKey: "k" }, [{ input: "\"x\"" }])
      expect(otherTenant.created).toBe(true)
      expect(yield* store.get("job_b", "u")).toBeUndefined()
      expect(yield* store.setState("job_b", "cancelled", { now: 5000, reason: "asked" })).toBe(true)
      expect(yield* store.setState("job_b", "finished", { now: 6000, unless: ["cancelled"] })).toBe(false)
      expect(yield* store.get("job_b")).toMatchObject({ state: "cancelled", reason: "asked", finishedAt: 5000 })
      expect((yield* store.unfinished).map((j) => j.id)).toEqual(["job_d"])
    }).pipe(Effect.provide(sqlite())))
})
