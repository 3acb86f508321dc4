/**
 * `metrics: true`: what a batch leaves in Effect's metric registry, read
 * from `Metric.unsafeSnapshot()` as an exporter reads it, on the TestClock.
 * Each test names its batch, so the global registry's series stay apart.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, TestClock } from "effect"
import type { MetricPair } from "effect"
import * as Batch from "../../src/Batch.js"
import * as BatchMetrics from "../../src/BatchMetrics.js"
import { joinOnTestClock, runOnTestClock } from "../support/TestTime.js"
import { threeFates } from "../support/threeFates.js"

/** The series of `name` whose labels include `labels` (any order); one at most. */
const series = (name: string, labels: Record<string, string>): MetricPair.MetricPair.Untyped | undefined => {
  const found = Metric.unsafeSnapshot().filter((pair) =>
    pair.metricKey.name === name &&
    Object.entries(labels).every(([key, value]) => pair.metricKey.tags.some((t) => t.key === key && t.value === value))
  )
  if (found.length > 1) throw new Error(`${found.length} series of ${name} match ${JSON.stringify(labels)}`)
  return found[0]
}

/** A counter's count or a gauge's value; `undefined` when the series does not exist. */
const valueOf = (name: string, labels: Record<string, string>): number | undefined => {
  const state = series(name, labels)?.metricState as { count?: number, value?: number } | undefined
  return state === undefined ? undefined : (state.count ?? state.value)
}

/** Item 1 fails once (transient); item 2 fails for good; the others take 100 ms. */
const task = () => threeFates((item) => Effect.as(Effect.sleep("100 millis"), item))

describe("Batch metrics", () => {
  it.effect("counters by outcome and class, histograms, waits and time spent, under the batch's name and the caller's labels", () =>
    Effect.gen(function*() {
      const batch = "metrics-counters"
      const run = Batch.run([0, 1, 2, 3, 4, 5], task(), {
        concurrency: 2,
        metrics: true,
        name: batch,
        estimate: () => ({ tokens: 10, usd: 0.001 })
      }).pipe(Effect.tagMetrics("profile", "sim"))
      const { report } = yield* runOnTestClock(run, "1 days", 20)
      const at = (labels: Record<string, string> = {}) => ({ batch, profile: "sim", ...labels })

      expect(valueOf("effect_batch_items_total", at({ outcome: "succeeded", reason: "call" }))).toBe(5)
      expect(valueOf("effect_batch_items_total", at({ outcome: "failed", reason: "Permanent" }))).toBe(1)
      // Series that never moved are not made.
      expect(series("effect_batch_items_total", at({ outcome: "skipped" }))).toBeUndefined()
      expect(valueOf("effect_batch_attempts_total", at())).toBe(report.attempts)
      expect(report.attempts).toBe(7)
      expect(valueOf("effect_batch_attempt_failures_total", at({ class: "Transient" }))).toBe(1)
      expect(valueOf("effect_batch_attempt_failures_total", at({ class: "Permanent" }))).toBe(1)
      expect(valueOf("effect_batch_retries_total", at({ class: "Transient" }))).toBe(1)
      expect(valueOf("effect_batch_tokens_total", at({ kind: "estimated" }))).toBe(70)
      expect(valueOf("effect_batch_cost_usd_total", at({ kind: "estimated" }))).toBeCloseTo(0.007)
      expect(valueOf("effect_batch_time_spent_ms_total", at({ part: "in_flight" }))).toBe(report.timeSpent.inFlightMs)
      expect(valueOf("effect_batch_time_spent_ms_total", at({ part: "backoff" }))).toBe(report.timeSpent.backoffMs)

      const items = series("effect_batch_item_duration_ms", at())!.metricState as unknown as { count: number, max: number }
      const attempts = series("effect_batch_attempt_duration_ms", at())!.metricState as unknown as { count: number, sum: number }
      expect(items.count).toBe(6)
      expect(items.max).toBe(report.latencyMs.max)
      expect(attempts.count).toBe(7)
      expect(attempts.sum).toBeCloseTo(500)
      // The batch is over: its share of the gauges is given back.
      // (in flight may never have been seen above 0 by a flush: the batch took less than a second)
      expect(valueOf("effect_batch_in_flight", at()) ?? 0).toBe(0)
      expect(valueOf("effect_batch_concurrency_limit", at())).toBe(0)
    }))

  it.effect("while it runs: the gauges and counters move once a second", () =>
    Effect.gen(function*() {
      const batch = "metrics-live"
      const fiber = yield* Effect.fork(
        Batch.run(Array.from({ length: 40 }, (_, i) => i), () => Effect.as(Effect.sleep("400 millis"), 0), {
          concurrency: 4,
          metrics: true,
          name: batch
        })
      )
      yield* TestClock.adjust("1 second")
      // At 1 s: two rounds of 4 done (at 400 and 800 ms), 4 in flight, the limit 4.
      expect(valueOf("effect_batch_items_total", { batch, outcome: "succeeded" })).toBe(8)
      expect(valueOf("effect_batch_in_flight", { batch })).toBe(4)
      expect(valueOf("effect_batch_concurrency_limit", { batch })).toBe(4)
      const { report } = yield* joinOnTestClock(fiber, "1 days", 20)
      expect(report.succeeded).toBe(40)
      expect(valueOf("effect_batch_items_total", { batch, outcome: "succeeded" })).toBe(40)
      expect(valueOf("effect_batch_in_flight", { batch })).toBe(0)
    }))

  it.effect("BatchMetrics.withLabels labels the batch's series as tagMetrics does, and leaves Effect's fiber counters out", () =>
    Effect.gen(function*() {
      const batch = "metrics-labelled"
      const viaWithLabels = { profile: "with-labels-test" }
      const viaTagMetrics = { profile: "tag-metrics-test" }
      const run = (name: string) => Batch.run([0, 1, 2], (n: number) => Effect.as(Effect.sleep("10 millis"), n), { metrics: true, name })
      yield* runOnTestClock(run(batch).pipe(BatchMetrics.withLabels(viaWithLabels)), "1 days", 5)
      yield* runOnTestClock(run(`${batch}-2`).pipe(Effect.tagMetrics(viaTagMetrics)), "1 days", 5)
      expect(valueOf("effect_batch_items_total", { batch, ...viaWithLabels, outcome: "succeeded" })).toBe(3)
      // Under tagMetrics every fiber's end is counted under the labels; under withLabels none is.
      expect(valueOf("effect_fiber_successes", viaTagMetrics)).toBeGreaterThan(0)
      expect(series("effect_fiber_successes", viaWithLabels)).toBeUndefined()
      expect(Metric.unsafeSnapshot().filter((pair) =>
        pair.metricKey.name.startsWith("effect_fiber_") && pair.metricKey.tags.some((t) => t.value === viaWithLabels.profile))).toEqual([])
    }))

  it.effect("off (the default): no series of its own", () =>
    Effect.gen(function*() {
      yield* runOnTestClock(Batch.run([0, 1], task(), { concurrency: 2, name: "metrics-off" }), "1 days", 20)
      expect(Metric.unsafeSnapshot().filter((p) => p.metricKey.tags.some((t) => t.value === "metrics-off"))).toEqual([])
    }))
})
