import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Scope } from "effect"
import * as JobStore from "../../src/service/JobStore.js"
import * as OutcomeWriter from "../../src/service/OutcomeWriter.js"
import { job, outcome } from "./JobStore/conformance.js"

/** A memory store whose `recordAll` calls are kept, and fail while `failing` is set. */
const watchedStore = Effect.gen(function*() {
  const store = yield* JobStore.makeMemory
  yield* store.insert(job("job_a", 10), Array.from({ length: 10 }, (_, i) => ({ input: `a ${i}` })))
  yield* store.insert(job("job_b", 10), Array.from({ length: 10 }, (_, i) => ({ input: `b ${i}` })))
  const writes: Array<ReadonlyArray<{ readonly jobId: string, readonly indexes: ReadonlyArray<number> }>> = []
  const state = { failing: false }
  const watched: JobStore.Store = {
    ...store,
    recordAll: (groups, now) =>
      Effect.suspend(() => {
        writes.push(groups.map((g) => ({ jobId: g.jobId, indexes: g.outcomes.map((o) => o.index) })))
        return state.failing
          ? Effect.fail(new JobStore.JobStoreError({ operation: "record", cause: new Error("disk full") }))
          : store.recordAll(groups, now)
      })
  }
  return { store: watched, writes, state }
})

const pendingOf = (store: JobStore.Store, jobId: string) =>
  Effect.map(store.pending(jobId, 0, 10), (items) => items.map((item) => item.index))

describe("OutcomeWriter", () => {
  it.scoped("what several jobs hand over in one turn is stored in one write; flushed waits for it", () =>
    Effect.gen(function*() {
      const { store, writes } = yield* watchedStore
      const writer = yield* OutcomeWriter.make(store, () => 2000)
      const since = writer.current()
      expect(writer.add("job_a", outcome(0, "succeeded"))).toBeUndefined()
      writer.add("job_b", outcome(3, "failed"))
      writer.add("job_a", outcome(1, "succeeded"))
      // Handed over, not yet stored.
      expect(yield* pendingOf(store, "job_a")).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      yield* writer.flushed("job_a", since)
      expect(yield* pendingOf(store, "job_a")).toEqual([2, 3, 4, 5, 6, 7, 8, 9])
      expect(yield* pendingOf(store, "job_b")).toEqual([0, 1, 2, 4, 5, 6, 7, 8, 9])
      expect(writes).toEqual([[{ jobId: "job_a", indexes: [0, 1] }, { jobId: "job_b", indexes: [3] }]])
      // Nothing handed over: nothing to wait for, no write.
      yield* writer.flushed("job_b", since)
      writer.add("job_b", outcome(4, "succeeded"))
      yield* writer.flushed("job_b", since)
      expect(writes.length).toBe(2)
    }))

  it.scoped("a failed write fails the flushed of every job it held, from before it; a chunk begun after is not failed by it", () =>
    Effect.gen(function*() {
      const { state, store } = yield* watchedStore
      const writer = yield* OutcomeWriter.make(store, () => 2000)
      const before = writer.current()
      state.failing = true
      writer.add("job_a", outcome(0, "succeeded"))
      const failed = yield* Effect.exit(writer.flushed("job_a", before))
      expect(Exit.isFailure(failed) && Cause.pretty(failed.cause)).toContain("disk full")
      // Asked again later, by the same chunk: still failed (its outcome was dropped, the item stays pending).
      expect(Exit.isFailure(yield* Effect.exit(writer.flushed("job_a", before)))).toBe(true)
      expect(yield* pendingOf(store, "job_a")).toContain(0)
      // Job b handed nothing to that write; a retried chunk of job a begins after it.
      yield* writer.flushed("job_b", before)
      state.failing = false
      const retried = writer.current()
      writer.add("job_a", outcome(0, "succeeded"))
      yield* writer.flushed("job_a", retried)
      expect(yield* pendingOf(store, "job_a")).not.toContain(0)
      writer.forget("job_a")
      yield* writer.flushed("job_a", before)
    }))

  it.effect("what is gathered when the scope closes is written then", () =>
    Effect.gen(function*() {
      const { store, writes } = yield* watchedStore
      const scope = yield* Scope.make()
      const writer = yield* Scope.extend(OutcomeWriter.make(store, () => 2000), scope)
      writer.add("job_b", outcome(9, "succeeded"))
      yield* Scope.close(scope, Exit.void)
      expect(writes).toEqual([[{ jobId: "job_b", indexes: [9] }]])
      expect(yield* pendingOf(store, "job_b")).not.toContain(9)
    }))

  it.scoped("past maxWaiting outcomes waiting, handing one over waits for their write (backpressure)", () =>
    Effect.gen(function*() {
      const { store } = yield* watchedStore
      const writer = yield* OutcomeWriter.make(store, () => 2000)
      for (let i = 1; i < OutcomeWriter.maxWaiting; i++) expect(writer.add("job_a", outcome(i % 10, "succeeded"))).toBeUndefined()
      const wait = writer.add("job_a", outcome(0, "succeeded"))
      expect(wait).toBeDefined()
      // Not written yet: the wait is for the write.
      expect(yield* pendingOf(store, "job_a")).toHaveLength(10)
      const fiber = yield* Effect.fork(wait!)
      yield* Fiber.join(fiber)
      expect(yield* pendingOf(store, "job_a")).toEqual([])
    }))
})
