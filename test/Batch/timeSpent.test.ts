/**
 * Where an item's time went (`BatchReport.TimeSpent`): queued for a permit,
 * waiting on the rate limiter and on its gate, in flight, backing off. Each
 * scenario runs on the TestClock, where the engine's own work takes no time,
 * so every item's parts add up to its wall time exactly, and the report's
 * sums are the items' sums.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import * as Batch from "../../src/Batch.js"
import * as BatchReport from "../../src/BatchReport.js"
import * as Progress from "../../src/Progress.js"
import * as RateLimiter from "../../src/RateLimiter.js"
import * as ResultCache from "../../src/ResultCache.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TaskError from "../../src/TaskError.js"
import { runOnTestClock } from "../support/TestTime.js"

type Spent = BatchReport.TimeSpent

/** Runs `Batch.run` on the TestClock, keeping each item's time spent as its outcome's progress event carries it. */
const profiled = <R>(
  items: ReadonlyArray<number>,
  task: (item: number) => Effect.Effect<number, TaskError.TaskError>,
  options: Batch.Options<number, number, TaskError.TaskError>,
  layer: Layer.Layer<R>
) =>
  Effect.gen(function*() {
    const byIndex = new Map<number, Spent>()
    const progress = Progress.layer((event) =>
      Effect.sync(() => {
        if ((event._tag === "ItemSucceeded" || event._tag === "ItemFailed") && event.timeSpent !== undefined) {
          byIndex.set(event.index, event.timeSpent)
        }
      })
    )
    const { report, results } = yield* runOnTestClock(
      Batch.run(items, task, options).pipe(Effect.provide(Layer.merge(layer, progress))),
      "1 days",
      20
    )
    const spent = items.map((i) => byIndex.get(i)!)
    return { report, results, spent }
  })

const partsOf = (s: Spent) => s.queuedMs + s.rateLimitMs + s.gateMs + s.inFlightMs + s.backoffMs

/** Every item's parts add up to its wall time, and the report's sums are the items' sums. */
const expectConsistent = (report: BatchReport.BatchReport, spent: ReadonlyArray<Spent>) => {
  for (const s of spent) expect(partsOf(s)).toBe(s.wallMs)
  const sum = (f: (s: Spent) => number) => spent.reduce((total, s) => total + f(s), 0)
  expect(report.timeSpent).toEqual({
    items: spent.length,
    queuedMs: sum((s) => s.queuedMs),
    rateLimitMs: sum((s) => s.rateLimitMs),
    gateMs: sum((s) => s.gateMs),
    inFlightMs: sum((s) => s.inFlightMs),
    backoffMs: sum((s) => s.backoffMs),
    wallMs: sum((s) => s.wallMs)
  })
}

const zero = { queuedMs: 0, rateLimitMs: 0, gateMs: 0, inFlightMs: 0, backoffMs: 0 }
const takes = (ms: number) => Effect.as(Effect.sleep(Duration.millis(ms)), 0)
/** Item 0's first call fails with `error` after `ms`; every other call takes 100 ms. */
const firstCallFails = (ms: number, error: TaskError.TaskError) => {
  let failed = false
  return (item: number) =>
    Effect.suspend(() => {
      if (item !== 0 || failed) return takes(100)
      failed = true
      return Effect.zipRight(Effect.sleep(Duration.millis(ms)), Effect.fail(error))
    })
}
const noJitter = RetryPolicy.layer({ base: "50 millis", jitter: 0 })

describe("BatchReport.timeSpent", () => {
  it.effect("a paced batch: the rate limiter's waits, then the calls; the verdict names the rate limit", () =>
    Effect.gen(function*() {
      const { report, spent } = yield* profiled(
        [0, 1, 2],
        () => takes(100),
        { concurrency: 1 },
        RateLimiter.layer({ requestsPerSecond: 1, burst: 1 })
      )
      expectConsistent(report, spent)
      expect(spent).toEqual([
        { ...zero, inFlightMs: 100, wallMs: 100 },
        { ...zero, rateLimitMs: 900, inFlightMs: 100, wallMs: 1000 },
        { ...zero, rateLimitMs: 900, inFlightMs: 100, wallMs: 1000 }
      ])
      expect(BatchReport.verdict(report)).toBe("86 % waiting on the rate limit: raise the limit or accept the pace")
      expect(BatchReport.format(report)).toContain("time spent   rate limit 86 %, in flight 14 %")
    }))

  it.effect("a retry: its backoff, then the wait for a permit the next item holds", () =>
    Effect.gen(function*() {
      const task = firstCallFails(100, new TaskError.Transient({ message: "503" }))
      const { report, results, spent } = yield* profiled([0, 1], task, { concurrency: 1 }, noJitter)
      expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Succeeded"])
      expectConsistent(report, spent)
      // Item 0 fails at 100, sleeps 50, waits for item 1's permit (100 → 200) until 200, runs again until 300.
      expect(spent[0]).toEqual({ ...zero, inFlightMs: 200, backoffMs: 50, queuedMs: 50, wallMs: 300 })
      expect(spent[1]).toEqual({ ...zero, inFlightMs: 100, wallMs: 100 })
      expect(BatchReport.timeShares(report.timeSpent).map((s) => s.part)).toEqual([
        "inFlight",
        "queued",
        "backoff",
        "rateLimit",
        "gate",
        "other"
      ])
    }))

  it.effect("a 429 closes the gate: the item admitted next waits on it; the retry waits out its Retry-After as backoff", () =>
    Effect.gen(function*() {
      const task = firstCallFails(10, new TaskError.RateLimited({ message: "429", retryAfter: Duration.seconds(1) }))
      const { report, spent } = yield* profiled([0, 1, 2], task, { concurrency: 2 }, noJitter)
      expectConsistent(report, spent)
      // Item 2 takes item 0's permit at 10 and waits for the gate until 1 010.
      expect(spent[2]).toEqual({ ...zero, gateMs: 1000, inFlightMs: 100, wallMs: 1100 })
      // Item 0 waits out the Retry-After (a permit is free by then), then the pace the limiter learned from the 429.
      expect(spent[0]).toMatchObject({ queuedMs: 0, gateMs: 0, inFlightMs: 110, backoffMs: 1000 })
      expect(spent[0]!.rateLimitMs).toBeGreaterThan(0)
      expect(report.gateClosures).toBe(1)
    }))

  it.effect("a deadline reached while waiting on the rate limiter counts as rate-limit time", () =>
    Effect.gen(function*() {
      const { report, results, spent } = yield* profiled(
        [0, 1],
        () => takes(10),
        { concurrency: 1, deadline: "500 millis" },
        RateLimiter.layer({ requestsPerSecond: 1, burst: 1 })
      )
      expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Failed"])
      expect(spent[1]).toEqual({ ...zero, rateLimitMs: 500, wallMs: 500 })
      expectConsistent(report, spent)
    }))

  it.effect("the verdict charges the time queued for a permit to what the permits' holders were doing", () =>
    Effect.gen(function*() {
      const { report } = yield* profiled([0], () => takes(10), { concurrency: 1 }, Layer.empty)
      const at = (spent: Partial<BatchReport.TimeSpent>) => ({
        ...report,
        timeSpent: { items: 10, queuedMs: 0, rateLimitMs: 0, gateMs: 0, inFlightMs: 0, backoffMs: 0, wallMs: 100, ...spent }
      })
      // 84 queued behind permits held 15 on the rate limiter and 1 in flight: 15 + 84 × 15/16 on the rate limit.
      const paced = at({ queuedMs: 84, rateLimitMs: 15, inFlightMs: 1 })
      expect(BatchReport.causes(paced.timeSpent).map((c) => [c.part, c.share])).toEqual([
        ["rateLimit", 0.9375],
        ["inFlight", 0.0625],
        ["queued", 0],
        ["gate", 0],
        ["backoff", 0],
        ["other", 0]
      ])
      expect(BatchReport.verdict(paced)).toBe("94 % waiting on the rate limit: raise the limit or accept the pace")
      // Queued behind calls in flight: the provider's time, at this concurrency.
      expect(BatchReport.verdict(at({ queuedMs: 60, inFlightMs: 30, rateLimitMs: 10 }))).toMatch(/^75 % in flight: /)
      // Backoff is no permit's: it stays as it is.
      expect(BatchReport.verdict(at({ queuedMs: 10, inFlightMs: 10, backoffMs: 80 }))).toMatch(/^80 % backing off between retries/)
      // No permit was ever held (every item waited and was then skipped): the queue itself.
      expect(BatchReport.verdict(at({ queuedMs: 100 }))).toMatch(/^100 % queued for a concurrency permit: /)
    }))

  it.effect("shared and cached items take no part: only the calls' time is counted; a batch answered from the cache has no verdict", () =>
    Effect.gen(function*() {
      const store = yield* ResultCache.makeMemory()
      const cached = Layer.succeed(ResultCache.ResultCache, store)
      const options = { concurrency: 3, key: (x: number) => x, cache: { key: (x: number) => String(x) } }
      const { report } = yield* profiled([7, 7, 7], () => takes(100), options, cached)
      expect(report.sources).toMatchObject({ call: 1, shared: 2 })
      expect(report.timeSpent).toMatchObject({ items: 1, inFlightMs: 100, wallMs: 100 })
      expect(BatchReport.verdict(report)).toBe(
        "100 % in flight: the provider's own time set the pace; more concurrency (3 at the end) goes faster if the provider allows it"
      )
      // Again, over the same cache: every item from it, no call, nothing to say.
      const again = yield* profiled([7, 7, 7], () => takes(100), options, cached)
      expect(again.report.sources).toMatchObject({ call: 0, cache: 3 })
      expect(again.report.timeSpent).toEqual({ items: 0, queuedMs: 0, rateLimitMs: 0, gateMs: 0, inFlightMs: 0, backoffMs: 0, wallMs: 0 })
      expect(again.spent.every((s) => s === undefined)).toBe(true)
      expect(BatchReport.verdict(again.report)).toBeUndefined()
    }))
})
