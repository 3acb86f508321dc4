/**
 * `spans: true`: the span tree a batch leaves on Effect's tracer, read from
 * a tracer that records every span the native one makes, on the TestClock
 * (a retry waits its backoff there).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Tracer } from "effect"
import * as Batch from "../../src/Batch.js"
import { eventsOf, recording } from "../support/recordingTracer.js"
import { threeFates } from "../support/threeFates.js"
import { runOnTestClock } from "../support/TestTime.js"

/** Item 0 succeeds; item 1 fails once (transient), then succeeds; item 2 fails for good. */
const task = () => threeFates((item) => Effect.withSpan(Effect.succeed(item * 10), "the task's own"))

const parentOf = (span: Tracer.Span) => Option.getOrUndefined(span.parent) as Tracer.Span | undefined

describe("Batch spans", () => {
  it.effect("an item span per item that calls, under the caller's; an attempt span per attempt under it, with the task's inside", () =>
    Effect.gen(function*() {
      const { spans, tracer } = yield* recording
      const run = Batch.run([0, 1, 2], task(), { concurrency: 2, spans: true }).pipe(
        Effect.withSpan("caller"),
        Effect.withTracer(tracer)
      )
      const { results } = yield* runOnTestClock(run, "1 second", 100)
      expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Succeeded", "Failed"])

      const named = (name: string) => spans.filter((s) => s.name === name)
      const caller = named("caller")[0]!
      const indexOf = (span: Tracer.Span) => Number(span.attributes.get("effect-batch.index"))
      const items = named("effect-batch.item").sort((a, b) => indexOf(a) - indexOf(b))
      const attempts = named("effect-batch.attempt")
      expect([items.length, attempts.length, named("the task's own").length]).toEqual([3, 4, 2])
      for (const item of items) expect(parentOf(item)).toBe(caller)
      for (const attempt of attempts) {
        expect(parentOf(attempt)).toBe(items[Number(attempt.attributes.get("effect-batch.index"))])
      }
      for (const own of named("the task's own")) expect(parentOf(own)?.name).toBe("effect-batch.attempt")

      const attrs = (span: Tracer.Span) => Object.fromEntries(span.attributes)
      // Where the item's time went (`BatchReport.TimeSpent`): the tasks take no time here, item 1 backs off once.
      const time = (backoff: number) => ({
        "effect-batch.queued_ms": 0,
        "effect-batch.rate_limit_ms": 0,
        "effect-batch.gate_ms": 0,
        "effect-batch.in_flight_ms": 0,
        "effect-batch.backoff_ms": backoff
      })
      const events = eventsOf(items[1]!)
      const delay = events[0]![2]["effect-batch.delay_ms"] as number
      expect(attrs(items[0]!)).toEqual({
        "effect-batch.index": 0,
        "effect-batch.outcome": "Succeeded",
        "effect-batch.attempts": 1,
        ...time(0)
      })
      expect(attrs(items[1]!)).toEqual({
        "effect-batch.index": 1,
        "effect-batch.outcome": "Succeeded",
        "effect-batch.attempts": 2,
        ...time(delay)
      })
      expect(attrs(items[2]!)).toEqual({
        "effect-batch.index": 2,
        "effect-batch.outcome": "Failed",
        "effect-batch.attempts": 1,
        "effect-batch.failure_class": "Permanent",
        ...time(0)
      })
      expect(items.map((s) => s.status._tag)).toEqual(["Ended", "Ended", "Ended"])
      const failedExit = items[2]!.status._tag === "Ended" ? items[2]!.status.exit._tag : undefined
      expect(failedExit).toBe("Failure")

      // The retry: an event on the item, the first attempt marked with its class.
      const retried = attempts.filter((s) => s.attributes.get("effect-batch.index") === 1)
        .sort((a, b) => Number(a.attributes.get("effect-batch.attempt")) - Number(b.attributes.get("effect-batch.attempt")))
      expect(retried.map((s) => [s.attributes.get("effect-batch.attempt"), s.attributes.get("effect-batch.failure_class")])).toEqual([
        [1, "Transient"],
        [2, undefined]
      ])
      expect(retried[0]!.attributes.get("effect-batch.rate_wait_ms")).toBe(0)
      expect(events.map(([name, , a]) => [name, a["effect-batch.failure_class"], (a["effect-batch.delay_ms"] as number) > 0])).toEqual([
        ["retry", "Transient", true]
      ])
    }))

  it.effect("off (the default): no span of its own, the task's still under the caller's", () =>
    Effect.gen(function*() {
      const { spans, tracer } = yield* recording
      yield* runOnTestClock(
        Batch.run([0, 1, 2], task(), { concurrency: 2 }).pipe(Effect.withSpan("caller"), Effect.withTracer(tracer)),
        "1 second",
        100
      )
      expect(spans.map((s) => s.name).sort()).toEqual(["caller", "the task's own", "the task's own"])
      for (const own of spans.filter((s) => s.name === "the task's own")) expect(parentOf(own)?.name).toBe("caller")
    }))
})
