import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Exit, Fiber, Option, Stream, TestClock } from "effect"
import * as Batch from "../../src/Batch.js"
import type * as BatchReport from "../../src/BatchReport.js"
import * as TaskError from "../../src/TaskError.js"
import { joinOnTestClock } from "../support/TestTime.js"

describe("Batch.stream", () => {
  it.effect("emits results as they settle, from a Stream source", () =>
    Effect.gen(function*() {
      const fiber = yield* Batch.stream(Stream.make(300, 100, 200), (ms) => Effect.as(Effect.sleep(Duration.millis(ms)), ms), {
        concurrency: 3
      }).pipe(Stream.map((r) => r._tag === "Succeeded" && [r.index, r.value]), Stream.runCollect, Effect.fork)
      yield* TestClock.adjust("1 second")
      expect(Chunk.toArray(yield* Fiber.join(fiber))).toEqual([[1, 100], [2, 200], [0, 300]])
    }))

  it.effect("pulls the source only as permits free up", () =>
    Effect.gen(function*() {
      let pulled = 0
      const source = Stream.range(0, 999).pipe(Stream.rechunk(1), Stream.tap(() => Effect.sync(() => pulled++)))
      const fiber = yield* Batch.stream(source, () => Effect.sleep("1 second"), { concurrency: 4 }).pipe(
        Stream.runDrain,
        Effect.fork
      )
      yield* TestClock.adjust("10 millis")
      expect(pulled).toBeLessThanOrEqual(4 + 1)
      yield* TestClock.adjust("1 second")
      expect(pulled).toBeLessThanOrEqual(8 + 1)
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("taking the first results stops the batch and interrupts the rest", () =>
    Effect.gen(function*() {
      let started = 0
      let interrupted = 0
      const fiber = yield* Batch.stream(Stream.range(0, 99), (i) =>
        Effect.gen(function*() {
          started++
          yield* Effect.onInterrupt(Effect.sleep(Duration.millis(10 + i)), () => Effect.sync(() => interrupted++))
          return i
        }), { concurrency: 5 }).pipe(Stream.take(3), Stream.runCollect, Effect.fork)
      const taken = yield* joinOnTestClock(fiber, "1 second")
      expect(Chunk.size(taken)).toBe(3)
      expect(started).toBeLessThan(100)
      expect(interrupted).toBeGreaterThan(0)
    }))

  it.effect("failures are results, not stream failures; a failing source fails the stream", () =>
    Effect.gen(function*() {
      const results = yield* Batch.stream([1, 2], (n) => (n === 1 ? Effect.fail(new TaskError.Permanent({})) : Effect.succeed(n))).pipe(
        Stream.runCollect
      )
      expect(Chunk.toArray(results).map((r) => r._tag).sort()).toEqual(["Failed", "Succeeded"])
      const error = yield* Batch.stream(Stream.concat(Stream.make(1), Stream.fail("source broke")), Effect.succeed).pipe(
        Stream.runDrain,
        Effect.flip
      )
      expect(error).toBe("source broke")
    }))

  it.effect("a source failing while items are in flight fails the batch at once and interrupts them", () =>
    Effect.gen(function*() {
      let interrupted = 0
      const source = Stream.concat(Stream.make(1, 2, 3), Stream.fromEffect(Effect.sleep("1 second")).pipe(Stream.drain))
        .pipe(Stream.concat(Stream.fail("source broke")), Stream.rechunk(1))
      const fiber = yield* Batch.run(source, () =>
        Effect.onInterrupt(Effect.sleep("1 hour"), () => Effect.sync(() => interrupted++)), { concurrency: 8 }).pipe(
        Effect.flip,
        Effect.fork
      )
      yield* TestClock.adjust("2 seconds")
      // Settled within the two seconds: the batch did not wait for its items' hour.
      const error = Option.getOrThrow(yield* Fiber.poll(fiber))
      expect(error).toEqual(Exit.succeed("source broke"))
      expect(interrupted).toBe(3)
    }))

  it.effect("1 000 items from a Stream all come out, each index once", () =>
    Effect.gen(function*() {
      const results = yield* Batch.stream(Stream.range(0, 999), (i) => Effect.as(Effect.yieldNow(), i * 2), { concurrency: 50 }).pipe(
        Stream.runCollect
      )
      const indices = Chunk.toArray(results).map((r) => r.index).sort((a, b) => a - b)
      expect(indices).toEqual(Array.from({ length: 1000 }, (_, i) => i))
      expect(Chunk.toArray(results).every((r) => r._tag === "Succeeded" && r.value === r.index * 2)).toBe(true)
    }))

  describe("onReport", () => {
    const collect = () => {
      const reports: Array<[BatchReport.BatchReport, Batch.Ending]> = []
      const onReport = (report: BatchReport.BatchReport, ending: Batch.Ending) => Effect.sync(() => void reports.push([report, ending]))
      return { reports, onReport }
    }
    const task = (n: number) =>
      n % 4 === 3 ? Effect.fail(new TaskError.Permanent({ message: `item ${n}` })) : Effect.as(Effect.sleep(Duration.millis(100)), n)

    it.effect("hands the stream's report over once, on completion: the same as run's for the same work", () =>
      Effect.gen(function*() {
        const { onReport, reports } = collect()
        const streamed = yield* Batch.stream(Stream.range(0, 39), task, { concurrency: 4, onReport }).pipe(Stream.runCollect, Effect.fork)
        expect(Chunk.size(yield* joinOnTestClock(streamed, "1 second"))).toBe(40)
        const ran = yield* Batch.run(Stream.range(0, 39), task, { concurrency: 4 }).pipe(Effect.fork)
        const { report } = yield* joinOnTestClock(ran, "1 second")
        expect(reports).toHaveLength(1)
        const [streamedReport, ending] = reports[0]!
        expect(ending).toBe("completed")
        expect(streamedReport).toMatchObject({ total: 40, succeeded: 30, failed: 10, attempts: 40 })
        expect(streamedReport.failures.Permanent).toBe(10)
        expect({ ...streamedReport, wallMs: 0, throughput: 0 }).toEqual({ ...report, wallMs: 0, throughput: 0 })
      }))

    it.effect("a consumer that stops early gets a snapshot of what had settled, marked interrupted", () =>
      Effect.gen(function*() {
        const { onReport, reports } = collect()
        const fiber = yield* Batch.stream(Stream.range(0, 99), task, { concurrency: 4, onReport }).pipe(
          Stream.take(6),
          Stream.runCollect,
          Effect.fork
        )
        expect(Chunk.size(yield* joinOnTestClock(fiber, "100 millis"))).toBe(6)
        expect(reports).toHaveLength(1)
        const [snapshot, ending] = reports[0]!
        expect(ending).toBe("interrupted")
        // At least what was taken; at most what had been admitted by then. Never the whole input.
        expect(snapshot.total).toBeGreaterThanOrEqual(6)
        expect(snapshot.total).toBeLessThan(100)
        expect(snapshot.succeeded + snapshot.failed + snapshot.skipped).toBe(snapshot.total)
        expect(snapshot.wallMs).toBeGreaterThan(0)
      }))

    it.effect("interrupting the fiber that runs the batch hands over the snapshot too (run as well as stream)", () =>
      Effect.gen(function*() {
        const { onReport, reports } = collect()
        const slow = (n: number) => Effect.as(Effect.sleep(Duration.millis(100)), n)
        const fiber = yield* Batch.run(Stream.range(0, 99), slow, { concurrency: 4, onReport }).pipe(Effect.fork)
        yield* TestClock.adjust("250 millis")
        yield* Fiber.interrupt(fiber)
        expect(reports.map(([, ending]) => ending)).toEqual(["interrupted"])
        // Two rounds of 4 settled by 250 ms (the third is in flight, and is not counted).
        expect(reports[0]![0]).toMatchObject({ total: 8, attempts: 12 })
        expect(reports[0]![0].wallMs).toBe(250)
      }))

    it.effect("run hands over the report it returns; a failing source ends the batch as failed", () =>
      Effect.gen(function*() {
        const { onReport, reports } = collect()
        const ran = yield* Batch.run([1, 2, 3], Effect.succeed, { onReport })
        expect(reports).toEqual([[ran.report, "completed"]])
        const error = yield* Batch.stream(Stream.concat(Stream.make(1, 2), Stream.fail("source broke")), Effect.succeed, { onReport }).pipe(
          Stream.runDrain,
          Effect.flip
        )
        expect(error).toBe("source broke")
        expect(reports[1]![1]).toBe("failed")
        expect(reports[1]![0].succeeded).toBe(2)
      }))
  })
})
