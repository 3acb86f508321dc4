import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Stream, TestClock } from "effect"
import * as Batch from "../../src/Batch.js"
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

  it.effect("1 000 items from a Stream all come out, each index once", () =>
    Effect.gen(function*() {
      const results = yield* Batch.stream(Stream.range(0, 999), (i) => Effect.as(Effect.yieldNow(), i * 2), { concurrency: 50 }).pipe(
        Stream.runCollect
      )
      const indices = Chunk.toArray(results).map((r) => r.index).sort((a, b) => a - b)
      expect(indices).toEqual(Array.from({ length: 1000 }, (_, i) => i))
      expect(Chunk.toArray(results).every((r) => r._tag === "Succeeded" && r.value === r.index * 2)).toBe(true)
    }))
})
