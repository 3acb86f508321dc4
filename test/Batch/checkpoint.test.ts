import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck, Layer, Option, Schema, Stream } from "effect"
import * as Batch from "../../src/Batch.js"
import type * as Budget from "../../src/Budget.js"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TaskError from "../../src/TaskError.js"
import type * as TaskResult from "../../src/TaskResult.js"
import { runOnTestClock } from "../support/TestTime.js"

type Script = "ok" | "permanent" | "flaky"

/** A deterministic task: the same item gives the same outcome in every run; "flaky" fails its first attempt of each run. */
const scripted = (scripts: ReadonlyArray<Script>) => {
  const calls = scripts.map(() => 0)
  const attemptsThisRun = new Map<number, number>()
  const task = (n: number, index: number) =>
    Effect.gen(function*() {
      calls[index]!++
      const attempt = (attemptsThisRun.get(index) ?? 0) + 1
      attemptsThisRun.set(index, attempt)
      yield* Effect.sleep(`${1 + (index % 7)} millis`)
      const script = scripts[index]!
      if (script === "permanent") return yield* new TaskError.Permanent({ message: `item ${index} rejected`, status: 400 })
      if (script === "flaky" && attempt === 1) return yield* new TaskError.Transient({ message: "reset" })
      return n * 2
    })
  return { calls, task, newRun: () => attemptsThisRun.clear() }
}

const summary = (results: ReadonlyArray<TaskResult.TaskResult<number, unknown>>) =>
  results.map((r) => (r._tag === "Succeeded" ? ["ok", r.value] : r._tag === "Failed" ? ["failed", r.errorClass] : ["skipped", r.reason]))

const policy = RetryPolicy.layer({ base: "10 millis", maxDelay: "50 millis" })

describe("Batch checkpoint", () => {
  it.effect.prop(
    "run + interruption + resume gives the results of one uninterrupted run; recorded successes are never called again",
    {
      scripts: FastCheck.array(FastCheck.constantFrom<Script>("ok", "ok", "ok", "permanent", "flaky"), { minLength: 1, maxLength: 40 }),
      stopAfter: FastCheck.nat({ max: 40 }),
      concurrency: FastCheck.integer({ min: 1, max: 6 })
    },
    ({ concurrency, scripts, stopAfter }) =>
      Effect.gen(function*() {
        const items = scripts.map((_, i) => i + 100)
        const reference = yield* runOnTestClock(Batch.run(items, scripted(scripts).task, { concurrency }))

        const { calls, newRun, task } = scripted(scripts)
        const checkpoint = { runId: "prop", schema: Schema.Number }
        const firstRun = yield* runOnTestClock(
          Batch.stream(items, task, { concurrency, checkpoint }).pipe(Stream.take(stopAfter), Stream.runCollect)
        )
        const callsBefore = [...calls]
        const succeededBefore = new Set([...firstRun].filter((r) => r._tag === "Succeeded").map((r) => r.index))
        // Everything recorded when the stop came, emitted or not (nothing when the stream was never pulled).
        const store = yield* CheckpointStore.CheckpointStore
        const opened = Option.isSome(yield* store.get("prop"))
        const recorded = opened ? [...(yield* store.load("prop")).values()] : []
        for (const index of succeededBefore) expect(recorded.some((r) => r.index === index && r.status === "succeeded")).toBe(true)
        newRun()
        const resumed = yield* runOnTestClock(Batch.run(items, task, { concurrency, checkpoint }))

        expect(summary(resumed.results)).toEqual(summary(reference.results))
        for (const index of succeededBefore) {
          expect(calls[index], `item ${index} succeeded before the stop and was called again`).toBe(callsBefore[index])
          expect(resumed.results[index]).toMatchObject({ source: "checkpoint" })
        }
        // No recorded outcome is paid for again: successes, and failures for good.
        for (const record of recorded) {
          expect(calls[record.index], `item ${record.index} was recorded ${record.status} and called again`).toBe(callsBefore[record.index])
        }
      }).pipe(Effect.provide(Layer.merge(CheckpointStore.layerMemory, policy))),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect("a finished run resumes with every item from the checkpoint; retryFailed runs the failed ones again", () =>
    Effect.gen(function*() {
      const scripts: Array<Script> = ["ok", "permanent", "ok"]
      const { calls, task } = scripted(scripts)
      yield* runOnTestClock(Batch.run([1, 2, 3], task, { checkpoint: { runId: "r" } }))
      const again = yield* runOnTestClock(Batch.run([1, 2, 3], task, { checkpoint: { runId: "r" } }))
      expect(again.report.sources.checkpoint).toBe(2)
      expect(again.results[1]).toMatchObject({ _tag: "Failed", errorClass: "Permanent" })
      expect(calls).toEqual([1, 1, 1])
      yield* runOnTestClock(Batch.run([1, 2, 3], task, { checkpoint: { runId: "r", retryFailed: true } }))
      expect(calls).toEqual([1, 2, 1])
      const store = yield* CheckpointStore.CheckpointStore
      const info = yield* store.get("r")
      expect(info._tag === "Some" && info.value.state).toBe("finished")
    }).pipe(Effect.provide(CheckpointStore.layerMemory)))

  it.effect("a resumed run whose input changed fails with CheckpointMismatch, in run, stream and forEach alike", () =>
    Effect.gen(function*() {
      const echo = (s: string) => Effect.succeed(s)
      yield* Batch.run(["a", "b", "c"], echo, { checkpoint: { runId: "m" } })
      const changed = ["a", "B", "c"]
      const failures = [
        yield* Effect.flip(Batch.run(changed, echo, { checkpoint: { runId: "m" } })),
        yield* Effect.flip(Stream.runDrain(Batch.stream(changed, echo, { checkpoint: { runId: "m" } }))),
        yield* Effect.flip(Batch.forEach(changed, echo, { checkpoint: { runId: "m" } }))
      ]
      for (const failure of failures) {
        expect(failure).toBeInstanceOf(CheckpointStore.CheckpointMismatch)
        expect(failure).toMatchObject({ _tag: "CheckpointMismatch", runId: "m", expected: CheckpointStore.itemKeyOf(1, "b") })
      }
      // Another fingerprint is refused when the run opens, before any item.
      const other = yield* Effect.flip(Batch.run(["a", "b", "c"], echo, { checkpoint: { runId: "m", fingerprint: "model-2" } }))
      expect(other).toMatchObject({ _tag: "CheckpointMismatch", runId: "m" })
    }).pipe(Effect.provide(CheckpointStore.layerMemory)))

  it("the error type names the checkpoint's failures only for a batch with a checkpoint", () => {
    type Failure = CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch
    const task = (n: number) => Effect.succeed(n)
    expectTypeOf(Batch.run([1], task)).toEqualTypeOf<Effect.Effect<Batch.RunResult<number, never>>>()
    expectTypeOf(Batch.run([1], task, { concurrency: 2 })).toEqualTypeOf<Effect.Effect<Batch.RunResult<number, never>>>()
    expectTypeOf(Batch.run([1], task, { checkpoint: { runId: "r" } })).toEqualTypeOf<
      Effect.Effect<Batch.RunResult<number, never>, CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch>
    >()
    expectTypeOf(Batch.stream([1], task, { checkpoint: { runId: "r" } })).toEqualTypeOf<
      Stream.Stream<Batch.Result<number, never>, CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch>
    >()
    expectTypeOf(Batch.forEach(task, { checkpoint: { runId: "r" } })([1])).toEqualTypeOf<
      Effect.Effect<Array<number>, TaskError.TaskError | Budget.BudgetExceeded | Failure>
    >()
    // A checkpoint that may be absent may still fail the batch.
    const maybe = (runId: string | undefined) => Batch.run([1], task, { checkpoint: runId === undefined ? undefined : { runId } })
    expectTypeOf(maybe).returns.toEqualTypeOf<
      Effect.Effect<Batch.RunResult<number, never>, CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch>
    >()
  })

  it.effect("a store that cannot record fails the batch with its CheckpointError and stops it: no call goes on after", () =>
    Effect.gen(function*() {
      const memory = yield* CheckpointStore.makeMemory
      const broken: CheckpointStore.Store = {
        ...memory,
        record: (runId) => Effect.fail(new CheckpointStore.CheckpointError({ operation: "record", runId, cause: "disk full" }))
      }
      let started = 0
      let finished = 0
      const task = (n: number) =>
        Effect.gen(function*() {
          started++
          yield* Effect.sleep("10 millis")
          finished++
          return n
        })
      const error = yield* runOnTestClock(Effect.flip(
        Batch.run(Array.from({ length: 1000 }, (_, i) => i), task, { concurrency: 4, checkpoint: { runId: "w" } }).pipe(
          Effect.provideService(CheckpointStore.CheckpointStore, broken)
        )
      ))
      expect(error).toBeInstanceOf(CheckpointStore.CheckpointError)
      expect(error.message).toBe('CheckpointStore.record (run "w") failed: disk full')
      // The first group is written 25 ms after the first outcome (10 ms): by then at most 4 × 4 calls started.
      expect(started).toBeLessThanOrEqual(20)
      const startedAtFailure = started
      yield* runOnTestClock(Effect.sleep("1 second"))
      expect(started).toBe(startedAtFailure)
      expect(finished).toBeLessThanOrEqual(started)
    }))

  it.effect("a store that cannot load, or a recorded value the schema cannot decode, fails the batch before any call", () =>
    Effect.gen(function*() {
      const memory = yield* CheckpointStore.makeMemory
      let calls = 0
      const task = (n: number) => Effect.sync(() => ++calls && n)
      const unreadable: CheckpointStore.Store = {
        ...memory,
        load: (runId) => Effect.fail(new CheckpointStore.CheckpointError({ operation: "load", runId, cause: "unreachable" }))
      }
      const loadFailed = yield* Effect.flip(Batch.run([1, 2], task, { checkpoint: { runId: "l" } }).pipe(
        Effect.provideService(CheckpointStore.CheckpointStore, unreadable)
      ))
      expect(loadFailed).toMatchObject({ _tag: "CheckpointError", operation: "load" })
      expect(calls).toBe(0)

      yield* Batch.run([1, 2], task, { checkpoint: { runId: "d" } }).pipe(Effect.provideService(CheckpointStore.CheckpointStore, memory))
      expect(calls).toBe(2)
      const undecodable = yield* Effect.flip(Batch.run([1, 2], task, { checkpoint: { runId: "d", schema: Schema.NumberFromString } }).pipe(
        Effect.provideService(CheckpointStore.CheckpointStore, memory)
      ))
      expect(undecodable).toMatchObject({ _tag: "CheckpointError", operation: "load", runId: "d" })
      expect(undecodable.message).toContain(
        'CheckpointStore.load (run "d") failed: the value recorded for item 0 does not decode with the checkpoint\'s schema: NumberFromString'
      )
      expect(undecodable.message).toContain("Expected string, actual 1")
      expect(calls).toBe(2)
    }))

  it.effect("without a CheckpointStore layer the option is refused with a clear message", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Batch.run([1], (n: number) => Effect.succeed(n), { checkpoint: { runId: "x" } }))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("needs a CheckpointStore layer")
    }))

  it.effect("a budget stop leaves the run stopped with its reason, ready to resume", () =>
    Effect.gen(function*() {
      const { Budget } = yield* Effect.promise(() => import("../../src/index.js"))
      yield* Batch.run([1, 2, 3, 4], (n: number) => Effect.succeed(n), {
        concurrency: 1,
        estimate: () => ({ usd: 1 }),
        checkpoint: { runId: "b" }
      }).pipe(Effect.provide(Budget.layer({ maxCost: 2 })))
      const store = yield* CheckpointStore.CheckpointStore
      const info = yield* store.get("b")
      expect(info._tag === "Some" && [info.value.state, info.value.reason, info.value.counts.succeeded, info.value.cost])
        .toEqual(["stopped", "budget", 2, 2])
      const resumed = yield* Batch.run([1, 2, 3, 4], (n: number) => Effect.succeed(n), { checkpoint: { runId: "b" } })
      expect(resumed.report.sources).toMatchObject({ checkpoint: 2, call: 2 })
    }).pipe(Effect.provide(CheckpointStore.layerMemory)))
})
