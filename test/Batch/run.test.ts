import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, FastCheck, Layer, pipe } from "effect"
import * as Batch from "../../src/Batch.js"
import * as ConcurrencyLimiter from "../../src/ConcurrencyLimiter.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TaskError from "../../src/TaskError.js"
import type * as TaskResult from "../../src/TaskResult.js"
import { joinOnTestClock, runOnTestClock } from "../support/TestTime.js"

const settle = <A, E, R>(effect: Effect.Effect<A, E, R>) => runOnTestClock(effect)

type Step = "ok" | "Transient" | "RateLimited" | "Overloaded" | "Timeout" | "Permanent"

const failureOf = (step: Exclude<Step, "ok">): TaskError.TaskError => {
  switch (step) {
    case "Transient":
      return new TaskError.Transient({})
    case "RateLimited":
      return new TaskError.RateLimited({ retryAfter: Duration.millis(50) })
    case "Overloaded":
      return new TaskError.Overloaded({})
    case "Timeout":
      return new TaskError.Timeout({})
    case "Permanent":
      return new TaskError.Permanent({})
  }
}

/**
 * What a script of attempt outcomes must end as, with `maxAttempts`:
 * `RateLimited` failures do not count toward it (their patience, 10 minutes,
 * outlasts any script here).
 */
const expected = (script: ReadonlyArray<Step>, maxAttempts: number) => {
  let counted = 0
  for (let i = 0; ; i++) {
    const step = script[i] ?? "ok"
    if (step === "ok") return { tag: "Succeeded", attempts: i + 1 }
    if (step === "Permanent") return { tag: "Failed", attempts: i + 1, errorClass: "Permanent" }
    if (step !== "RateLimited" && ++counted === maxAttempts) return { tag: "Failed", attempts: i + 1, errorClass: step }
  }
}

describe("Batch.run", () => {
  it.effect.prop(
    "every index comes out once, aligned with its item; never more than the limit in flight; attempts follow the script",
    {
      scripts: FastCheck.array(
        FastCheck.array(FastCheck.constantFrom<Step>("ok", "Transient", "RateLimited", "Overloaded", "Timeout", "Permanent"), {
          maxLength: 4
        }),
        { maxLength: 60 }
      ),
      latencies: FastCheck.array(FastCheck.integer({ min: 0, max: 200 }), { minLength: 60, maxLength: 60 }),
      concurrency: FastCheck.integer({ min: 1, max: 8 }),
      maxAttempts: FastCheck.integer({ min: 1, max: 5 })
    },
    ({ concurrency, latencies, maxAttempts, scripts }) =>
      Effect.gen(function*() {
        let inFlight = 0
        let peak = 0
        const calls = scripts.map(() => 0)
        const items = scripts.map((script, i) => ({ id: `item-${i}`, script }))
        const task = (item: (typeof items)[number], index: number) =>
          Effect.gen(function*() {
            const attempt = calls[index]!++
            inFlight++
            peak = Math.max(peak, inFlight)
            yield* Effect.sleep(Duration.millis(latencies[(index + attempt) % latencies.length]!))
            inFlight--
            const step = item.script[attempt] ?? "ok"
            if (step !== "ok") return yield* Effect.fail(failureOf(step))
            return item.id.toUpperCase()
          })
        const { report, results } = yield* settle(
          Batch.run(items, task, { concurrency }).pipe(
            Effect.provide(RetryPolicy.layer({ maxAttempts, base: "10 millis", maxDelay: "100 millis" }))
          )
        )
        expect(results.length).toBe(items.length)
        expect(peak).toBeLessThanOrEqual(concurrency)
        results.forEach((result, i) => {
          expect(result.index).toBe(i)
          const want = expected(items[i]!.script, maxAttempts)
          expect(result._tag).toBe(want.tag)
          expect(result.attempts).toBe(want.attempts)
          expect(calls[i]).toBe(want.attempts)
          if (result._tag === "Succeeded") expect(result.value).toBe(`ITEM-${i}`)
          if (result._tag === "Failed") expect(result.errorClass).toBe(want.errorClass)
        })
        expect(report.total).toBe(items.length)
        expect(report.attempts).toBe(calls.reduce((a, b) => a + b, 0))
        expect(report.succeeded + report.failed).toBe(items.length)
      }),
    { fastCheck: { numRuns: 60 } }
  )

  it.effect("a permanent error costs exactly one attempt", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* settle(
        Batch.run([1], () => {
          calls++
          return Effect.fail(new TaskError.Permanent({ message: "bad request", status: 400 }))
        }).pipe(Effect.provide(RetryPolicy.layer({ maxAttempts: 10 })))
      )
      expect(calls).toBe(1)
      expect(results[0]).toMatchObject({ _tag: "Failed", attempts: 1, errorClass: "Permanent" })
    }))

  it.effect("a defect is a Permanent failure of its item, never retried, and the batch goes on", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* settle(
        Batch.run([1, 2], (n) => {
          calls++
          return n === 1 ? Effect.die(new Error("null pointer")) : Effect.succeed(n)
        })
      )
      expect(calls).toBe(2)
      expect(results[0]).toMatchObject({ _tag: "Failed", attempts: 1, errorClass: "Permanent" })
      const failed = results[0] as TaskResult.Failed<TaskError.TaskError>
      expect(failed.error.message).toContain("null pointer")
      expect(results[1]).toMatchObject({ _tag: "Succeeded", value: 2 })
    }))

  it.effect("a custom classify decides what a domain error is", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* settle(
        Batch.run([1], () => {
          calls++
          return Effect.fail({ kind: "validation" as const })
        }, { classify: () => new TaskError.Permanent({}) })
      )
      expect(calls).toBe(1)
      expect(results[0]).toMatchObject({ _tag: "Failed", errorClass: "Permanent", error: { kind: "validation" } })
    }))

  it.effect("timeout: a slow attempt fails with Timeout and is retried like any failure", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* settle(
        Batch.run([1], () => {
          calls++
          return Effect.as(Effect.sleep(calls === 1 ? "10 seconds" : "10 millis"), "done")
        }, { timeout: "1 second" })
      )
      expect(calls).toBe(2)
      expect(results[0]).toMatchObject({ _tag: "Succeeded", value: "done", attempts: 2 })
    }))

  it.effect("deadline: remaining attempts are abandoned and the item fails with Timeout", () =>
    Effect.gen(function*() {
      let calls = 0
      const fiber = yield* Effect.fork(
        Batch.run([1], () => {
          calls++
          return Effect.zipRight(Effect.sleep("400 millis"), Effect.fail(new TaskError.Transient({})))
        }, { deadline: "1 second" }).pipe(
          Effect.provide(RetryPolicy.layer({ maxAttempts: 100, base: "100 millis", factor: 1, jitter: 0 }))
        )
      )
      const { results } = yield* joinOnTestClock(fiber, "10 seconds")
      // 400 ms, +100 wait, 400 ms (t=900), +100 wait reaches the deadline: no third attempt.
      expect(calls).toBe(2)
      expect(results[0]).toMatchObject({ _tag: "Failed", errorClass: "Timeout", attempts: 2 })
      expect((results[0] as TaskResult.Failed<TaskError.TaskError>).error).toMatchObject({ scope: "deadline" })
    }))

  it.effect("deadline: an attempt still running at the deadline is interrupted", () =>
    Effect.gen(function*() {
      let interrupted = false
      const fiber = yield* Effect.fork(
        Batch.run([1], () => Effect.onInterrupt(Effect.sleep("1 hour"), () => Effect.sync(() => (interrupted = true))), {
          deadline: "2 seconds"
        })
      )
      const { results } = yield* joinOnTestClock(fiber, "2 seconds")
      expect(interrupted).toBe(true)
      expect(results[0]).toMatchObject({ _tag: "Failed", errorClass: "Timeout", attempts: 1, durationMs: 2000 })
    }))

  it.effect("key: items with the same key in flight share one execution", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const items = ["a", "b", "a", "a", "c", "b"]
      const { report, results } = yield* settle(
        Batch.run(items, (s) => {
          calls.push(s)
          return Effect.as(Effect.sleep("100 millis"), s.toUpperCase())
        }, { concurrency: 10, key: (s) => s })
      )
      expect(calls.sort()).toEqual(["a", "b", "c"])
      expect(results.map((r) => r._tag === "Succeeded" && `${r.value}:${r.source}:${r.attempts}`)).toEqual([
        "A:call:1",
        "B:call:1",
        "A:shared:0",
        "A:shared:0",
        "C:call:1",
        "B:shared:0"
      ])
      expect(report.sources).toMatchObject({ call: 3, shared: 3 })
    }))

  it.effect("key: a shared failure is reported for every duplicate", () =>
    Effect.gen(function*() {
      const { results } = yield* settle(
        Batch.run(["x", "x"], () => Effect.zipRight(Effect.sleep("10 millis"), Effect.fail(new TaskError.Permanent({}))), {
          concurrency: 2,
          key: (s) => s
        })
      )
      expect(results.map((r) => r._tag === "Failed" && `${r.errorClass}:${r.attempts}`)).toEqual(["Permanent:1", "Permanent:0"])
    }))

  it.effect("priority: higher starts first, equal priorities keep input order", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const items = [1, 5, 3, 5, 1, 9]
      yield* settle(
        Batch.run(items, (_n, i) => Effect.zipRight(Effect.sync(() => started.push(i)), Effect.sleep("10 millis")), {
          concurrency: 1,
          priority: (n) => n
        })
      )
      expect(started).toEqual([5, 1, 3, 2, 0, 4])
    }))

  it.effect("priority over an iterable orders within the look-ahead window", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      function* items() {
        yield* [1, 5, 3, 5, 1, 9]
      }
      yield* settle(
        Batch.run(items(), (_, i) => Effect.zipRight(Effect.sync(() => started.push(i)), Effect.sleep("10 millis")), {
          concurrency: 1,
          priority: (n) => n
        })
      )
      expect(started).toEqual([5, 1, 3, 2, 0, 4])
    }))

  it.effect("a retrying item holds no permit while it waits", () =>
    Effect.gen(function*() {
      const starts: Array<[number, number]> = []
      let calls = 0
      yield* settle(
        Batch.run([0, 1, 2], (i) =>
          Effect.gen(function*() {
            starts.push([i, yield* Clock.currentTimeMillis])
            if (i === 0 && calls++ === 0) return yield* Effect.fail(new TaskError.Transient({}))
            yield* Effect.sleep("100 millis")
          }), { concurrency: 1 }).pipe(
          Effect.provide(RetryPolicy.layer({ base: "1 second", jitter: 0 }))
        )
      )
      // Item 0 fails at t=0 and waits 1 s; items 1 and 2 use the only permit meanwhile.
      expect(starts).toEqual([[0, 0], [1, 0], [2, 100], [0, 1000]])
    }))

  it.effect("validates its options, naming them", () =>
    Effect.gen(function*() {
      const defect = yield* Effect.flip(Effect.sandbox(Batch.run([1], Effect.succeed, { concurrency: 0 })))
      expect(String(defect)).toMatch(/concurrency must be an integer ≥ 1, got 0/)
      const timeout = yield* Effect.flip(Effect.sandbox(Batch.run([1], Effect.succeed, { timeout: 0 })))
      expect(String(timeout)).toMatch(/timeout must be > 0/)
    }))

  it.effect("onResult sees each result as it settles, in settling order, and its effect holds the worker back", () =>
    Effect.gen(function*() {
      const seen: Array<[index: number, tag: string, at: number]> = []
      const task = (ms: number) => ms < 0 ? Effect.fail(new TaskError.Permanent({})) : Effect.as(Effect.sleep(Duration.millis(ms)), ms)
      const { results } = yield* settle(Batch.run([30, 10, -1, 20], task, {
        concurrency: 1,
        onResult: (result) => {
          seen.push([result.index, result._tag, 0])
          // The first result's effect takes 100 ms: the single worker starts nothing before it ends.
          return result.index === 0
            ? Effect.flatMap(
                Effect.zipRight(Effect.sleep(Duration.millis(100)), Clock.currentTimeMillis),
                (at) => Effect.sync(() => void (seen[0]![2] = at))
              )
            : Effect.flatMap(Clock.currentTimeMillis, (at) => Effect.sync(() => void (seen[seen.length - 1]![2] = at)))
        }
      }))
      expect(seen).toEqual([[0, "Succeeded", 130], [1, "Succeeded", 140], [2, "Failed", 140], [3, "Succeeded", 160]])
      expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Succeeded", "Failed", "Succeeded"])
    }))

  it.effect("an empty input settles at once", () =>
    Effect.gen(function*() {
      const { report, results } = yield* Batch.run([], Effect.succeed)
      expect(results).toEqual([])
      expect(report.total).toBe(0)
    }))

  it.effect("is dual", () =>
    Effect.gen(function*() {
      const { results } = yield* pipe([1, 2, 3], Batch.run((n: number) => Effect.succeed(n * 2)))
      expect(results.map((r) => r._tag === "Succeeded" && r.value)).toEqual([2, 4, 6])
    }))
})

describe("Batch.forEach", () => {
  it.effect("returns the values in input order", () =>
    Effect.gen(function*() {
      const values = yield* settle(
        Batch.forEach([30, 10, 20], (n) => Effect.as(Effect.sleep(Duration.millis(n)), n * 2), { concurrency: 3 })
      )
      expect(values).toEqual([60, 20, 40])
    }))

  it.effect("fails fast: the first final failure interrupts everything in flight", () =>
    Effect.gen(function*() {
      const interrupted: Array<number> = []
      const started: Array<number> = []
      const error = yield* settle(
        Batch.forEach([0, 1, 2, 3, 4, 5], (i) =>
          Effect.gen(function*() {
            started.push(i)
            if (i === 1) return yield* Effect.zipRight(Effect.sleep("10 millis"), Effect.fail(new TaskError.Permanent({ message: "item 1" })))
            yield* Effect.onInterrupt(Effect.sleep("1 hour"), () => Effect.sync(() => interrupted.push(i)))
          }), { concurrency: 3 }).pipe(Effect.flip)
      )
      expect(error).toMatchObject({ _tag: "Permanent", message: "item 1" })
      expect(started).toEqual([0, 1, 2])
      expect(interrupted.sort()).toEqual([0, 2])
    }))

  it.effect("an interrupted batch gives a shared limiter back all its permits", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makeFixed(2)
      const shared = Layer.succeed(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
      yield* settle(
        Batch.forEach([0, 1, 2], (i) => (i === 1 ? Effect.fail(new TaskError.Permanent({})) : Effect.never)).pipe(
          Effect.provide(shared),
          Effect.flip
        )
      )
      let peak = 0
      let inFlight = 0
      yield* settle(
        Batch.run([0, 1, 2, 3], () =>
          Effect.gen(function*() {
            peak = Math.max(peak, ++inFlight)
            yield* Effect.sleep("10 millis")
            inFlight--
          })).pipe(Effect.provide(shared))
      )
      expect(peak).toBe(2)
    }))

  it.effect("stopWhen: in-flight items finish, nothing more starts, the rest are Skipped(interrupted)", () =>
    Effect.gen(function*() {
      const stop = yield* Deferred.make<void>()
      const started: Array<number> = []
      const task = (n: number) =>
        Effect.gen(function*() {
          started.push(n)
          if (n === 2) yield* Deferred.succeed(stop, undefined)
          yield* Effect.sleep("100 millis")
          return n
        })
      const { report, results } = yield* runOnTestClock(
        Batch.run(Array.from({ length: 10 }, (_, i) => i), task, { concurrency: 3, stopWhen: Deferred.await(stop) })
      )
      // Items 0-2 were in flight when 2 asked to stop: they finish; 3-9 never start.
      expect(started).toEqual([0, 1, 2])
      expect(results.slice(0, 3).map((r) => r._tag)).toEqual(["Succeeded", "Succeeded", "Succeeded"])
      expect(results.slice(3).every((r) => r._tag === "Skipped" && r.reason === "interrupted")).toBe(true)
      expect(report.skippedBy.interrupted).toBe(7)
    }))
})
