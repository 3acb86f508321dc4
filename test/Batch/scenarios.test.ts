import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Layer } from "effect"
import * as Batch from "../../src/Batch.js"
import type { BatchReport } from "../../src/BatchReport.js"
import * as ConcurrencyLimiter from "../../src/ConcurrencyLimiter.js"
import { permitProtocol } from "../../src/internal/permitPool.js"
import * as LimitAlgorithm from "../../src/LimitAlgorithm.js"
import * as Progress from "../../src/Progress.js"
import * as RateLimiter from "../../src/RateLimiter.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TaskError from "../../src/TaskError.js"
import { runOnTestClock } from "../support/TestTime.js"

const settle = <A, E, R>(effect: Effect.Effect<A, E, R>, horizon: Duration.DurationInput = "1 days") =>
  runOnTestClock(effect, horizon)

/** Average of the limit over [from, to] ms, weighting each value by how long it held. */
const averageLimit = (report: BatchReport, from: number, to: number) => {
  const points = report.concurrency
  let weighted = 0
  for (let i = 0; i < points.length; i++) {
    const [at, limit] = points[i]!
    const next = points[i + 1]?.[0] ?? to
    const start = Math.max(at, from)
    const end = Math.min(next, to)
    if (end > start) weighted += limit * (end - start)
  }
  return weighted / (to - from)
}

describe("Batch scenarios", () => {
  it.effect("a 429 with retry-after: 20 closes the gate for every fiber: no attempt starts for 20 s", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const events: Array<Progress.Event> = []
      let rateLimitedOnce = false
      const task = (i: number) =>
        Effect.gen(function*() {
          starts.push(yield* Clock.currentTimeMillis)
          if (i === 0 && !rateLimitedOnce) {
            rateLimitedOnce = true
            yield* Effect.sleep("10 millis")
            return yield* Effect.fail(TaskError.fromHttpResponse(429, { "retry-after": "20" }))
          }
          yield* Effect.sleep("100 millis")
          return i
        })
      const { report, results } = yield* settle(
        Batch.run(Array.from({ length: 12 }, (_, i) => i), task, { concurrency: 4 }).pipe(
          Effect.provide(Progress.layer((event) => Effect.sync(() => events.push(event))))
        )
      )
      expect(results.every((r) => r._tag === "Succeeded")).toBe(true)
      expect(starts.slice(0, 4)).toEqual([0, 0, 0, 0])
      expect(starts.filter((t) => t > 10 && t < 20_010)).toEqual([])
      expect(starts.length).toBe(13)
      expect(report.gateClosures).toBe(1)
      expect(report.gateWaitMs).toBeGreaterThan(0)
      expect(report.retriesBy.RateLimited).toBe(1)
      expect(events).toContainEqual({ _tag: "GateClosed", index: 0, durationMs: 20_000 })
      expect(events).toContainEqual({ _tag: "Retrying", index: 0, attempt: 1, errorClass: "RateLimited", delayMs: 20_000 })
    }))

  it.effect("the gate is shared by every batch using the same RateLimiter layer", () =>
    Effect.gen(function*() {
      const starts: Array<[string, number]> = []
      const limiter = yield* RateLimiter.make()
      const layer = Layer.succeed(RateLimiter.RateLimiter, limiter)
      const a = Batch.run([0], () =>
        Effect.gen(function*() {
          starts.push(["a", yield* Clock.currentTimeMillis])
          if (starts.length === 1) return yield* Effect.fail(new TaskError.RateLimited({ retryAfter: Duration.seconds(5) }))
        }))
      const b = Effect.zipRight(Effect.sleep("1 second"), Batch.run([0], () =>
        Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => starts.push(["b", t])))))
      yield* settle(Effect.all([a, b], { concurrency: "unbounded" }).pipe(Effect.provide(layer)))
      expect(starts[0]).toEqual(["a", 0])
      // Both held until the gate opens at 5 s; then paced, by what the 429 taught the shared limiter
      // (one start before it: 0.5/s, grown to 1/s by then), not all at once.
      expect(starts.slice(1).sort()).toEqual([["a", 6000], ["b", 5000]])
    }))

  it.effect("QuotaExhausted stops the batch once: in-flight items finish, the rest are Skipped(quota)", () =>
    Effect.gen(function*() {
      const calls: Array<number> = []
      const { report, results } = yield* settle(
        Batch.run(Array.from({ length: 20 }, (_, i) => i), (i) =>
          Effect.gen(function*() {
            calls.push(i)
            yield* Effect.sleep(Duration.millis(i === 3 ? 10 : 100))
            if (i === 3) return yield* Effect.fail(TaskError.fromHttpResponse(429, {}, { error: { code: "insufficient_quota" } }))
            return i
          }), { concurrency: 4 })
      )
      expect(calls).toEqual([0, 1, 2, 3])
      expect(results[3]).toMatchObject({ _tag: "Failed", errorClass: "QuotaExhausted", attempts: 1 })
      expect(results.slice(0, 3).map((r) => r._tag)).toEqual(["Succeeded", "Succeeded", "Succeeded"])
      expect(results.slice(4).every((r) => r._tag === "Skipped" && r.reason === "quota" && r.attempts === 0)).toBe(true)
      expect(report.skippedBy.quota).toBe(16)
    }))

  it.effect("QuotaExhausted: an item waiting to retry is skipped, not retried", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* settle(
        Batch.run([0, 1], (i): Effect.Effect<never, TaskError.TaskError> => {
          calls++
          return i === 0
            ? Effect.fail(new TaskError.Transient({}))
            : Effect.zipRight(Effect.sleep("100 millis"), Effect.fail(new TaskError.QuotaExhausted({})))
        }, { concurrency: 2 }).pipe(Effect.provide(RetryPolicy.layer({ base: "1 second", jitter: 0 })))
      )
      expect(calls).toBe(2)
      expect(results[0]).toMatchObject({ _tag: "Skipped", reason: "quota", attempts: 1 })
    }))

  it.effect("AIMD shrinks on drops and grows under load", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let overloads = 0
      // A service with 12 slots that refuses (503 overloaded) anything beyond them.
      const task = () =>
        Effect.gen(function*() {
          inFlight++
          yield* Effect.sleep("50 millis")
          const refused = inFlight > 12
          inFlight--
          if (refused) {
            overloads++
            return yield* Effect.fail(TaskError.fromHttpResponse(503, {}, { error: { code: "overloaded" } }))
          }
        })
      const { report, results } = yield* settle(
        Batch.run(Array.from({ length: 400 }, (_, i) => i), task).pipe(
          Effect.provide(ConcurrencyLimiter.layerAdaptive(LimitAlgorithm.aimd({ initial: 2, max: 64 }))),
          Effect.provide(RetryPolicy.layer({ maxAttempts: 10, base: "20 millis" }))
        )
      )
      expect(results.every((r) => r._tag === "Succeeded")).toBe(true)
      const limits = report.concurrency.map(([, limit]) => limit)
      expect(Math.max(...limits)).toBeGreaterThan(12) // grew past the capacity under load
      const decreases = limits.filter((limit, i) => i > 0 && limit < limits[i - 1]!).length
      expect(decreases).toBeGreaterThan(0) // and backed off when refused
      expect(overloads).toBeGreaterThan(0)
      expect(overloads).toBeLessThan(400 * 0.1)
      expect(limits.every((l) => l >= 1 && l <= 64)).toBe(true)
    }))

  it.effect("gradient settles near the capacity of a service whose latency rises past 16 in flight", () =>
    Effect.gen(function*() {
      let inFlight = 0
      // 16 slots at 40 ms; beyond them requests queue, so latency grows with the queue.
      const task = () =>
        Effect.gen(function*() {
          inFlight++
          yield* Effect.sleep(Duration.millis(40 * Math.max(1, inFlight / 16)))
          inFlight--
        })
      const { report } = yield* settle(
        Batch.run(Array.from({ length: 3000 }, (_, i) => i), task).pipe(
          Effect.provide(ConcurrencyLimiter.layerAdaptive(LimitAlgorithm.gradient({ initial: 4, max: 200 })))
        )
      )
      const average = averageLimit(report, report.wallMs / 2, report.wallMs)
      expect(average).toBeGreaterThanOrEqual(12)
      expect(average).toBeLessThanOrEqual(32)
      // Throughput close to the service's 400 requests/s.
      expect(report.throughput).toBeGreaterThan(300)
    }))

  it.effect("rejected requests (Permanent, QuotaExhausted) are not samples for adaptive concurrency", () =>
    Effect.gen(function*() {
      const base = yield* ConcurrencyLimiter.make(LimitAlgorithm.gradient({ initial: 4 }))
      const samples: Array<boolean> = []
      // The samples the engine hands the limiter, through its permit protocol.
      const protocol = base[permitProtocol]
      const counting: ConcurrencyLimiter.Limiter = {
        ...base,
        [permitProtocol]: { ...protocol, record: (sample) => (samples.push(sample.dropped), protocol.record(sample)) }
      }
      const task = (n: number): Effect.Effect<number, TaskError.TaskError> =>
        n % 3 === 0
          ? Effect.fail(new TaskError.Permanent({ status: 400 }))
          : n % 3 === 1
            ? Effect.zipRight(Effect.sleep("10 millis"), Effect.succeed(n))
            : Effect.zipRight(Effect.sleep("10 millis"), Effect.fail(new TaskError.Overloaded({})))
      yield* settle(
        Batch.run(Array.from({ length: 9 }, (_, i) => i), task).pipe(
          Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, counting),
          Effect.provide(RetryPolicy.layer({ maxAttempts: 1 }))
        )
      )
      // 3 successes and 3 overloads are samples (the overloads as drops); the 3 rejections are not.
      expect(samples.length).toBe(6)
      expect(samples.filter((dropped) => dropped).length).toBe(3)
    }))
})
