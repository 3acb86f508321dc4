import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import * as Batch from "../../src/Batch.js"
import * as ResultCache from "../../src/ResultCache.js"
import * as TaskError from "../../src/TaskError.js"

describe("Batch cache", () => {
  it.effect("a second run over the same store makes no call: every item comes from the cache", () =>
    Effect.gen(function*() {
      let calls = 0
      const task = (text: string) => Effect.sync(() => (calls++, text.toUpperCase()))
      const items = ["a", "b", "c", "d"]
      const cache = { key: (text: string) => ResultCache.key({ model: "m", input: text }) }
      const first = yield* Batch.run(items, task, { cache })
      expect(calls).toBe(4)
      expect(first.report.sources).toMatchObject({ call: 4, cache: 0 })
      const second = yield* Batch.run([...items, "e"], task, { cache })
      expect(calls).toBe(5)
      expect(second.results.map((r) => (r._tag === "Succeeded" ? [r.value, r.source, r.attempts] : r._tag))).toEqual([
        ["A", "cache", 0],
        ["B", "cache", 0],
        ["C", "cache", 0],
        ["D", "cache", 0],
        ["E", "call", 1]
      ])
      expect(second.report.sources).toMatchObject({ call: 1, cache: 4 })
    }).pipe(Effect.provide(ResultCache.layerMemory())))

  it.effect("values go through the schema: stored encoded, read back decoded", () =>
    Effect.gen(function*() {
      const Answer = Schema.Struct({ at: Schema.Date, text: Schema.String })
      const store = yield* ResultCache.ResultCache
      const task = (n: number) => Effect.succeed({ at: new Date(Date.UTC(2026, 0, n)), text: `n${n}` })
      const cache = { key: (n: number) => `answer-${n}`, schema: Answer }
      yield* Batch.run([1, 2], task, { cache })
      expect(yield* store.get("answer-1")).toEqual(Option.some({ at: "2026-01-01T00:00:00.000Z", text: "n1" }))
      const { results } = yield* Batch.run([1, 2], () => Effect.die("must not be called"), { cache })
      expect(results[1]).toMatchObject({ _tag: "Succeeded", source: "cache", value: { text: "n2" } })
      expect(results[1]?._tag === "Succeeded" && results[1].value.at).toEqual(new Date(Date.UTC(2026, 0, 2)))
    }).pipe(Effect.provide(ResultCache.layerMemory())))

  it.effect("a failing store is a miss: items still run and succeed", () =>
    Effect.gen(function*() {
      const broken = Layer.succeed(ResultCache.ResultCache, {
        get: (key) => Effect.fail(new ResultCache.ResultCacheError({ operation: "get", key, cause: "down" })),
        getMany: () => Effect.fail(new ResultCache.ResultCacheError({ operation: "getMany", cause: "down" })),
        set: (key) => Effect.fail(new ResultCache.ResultCacheError({ operation: "set", key, cause: "down" })),
        delete: (key) => Effect.fail(new ResultCache.ResultCacheError({ operation: "delete", key, cause: "down" })),
        size: Effect.fail(new ResultCache.ResultCacheError({ operation: "size", cause: "down" }))
      })
      const { report } = yield* Batch.run([1, 2, 3], (n: number) => Effect.succeed(n * 2), {
        cache: { key: String }
      }).pipe(Effect.provide(broken))
      expect(report.succeeded).toBe(3)
      expect(report.sources.call).toBe(3)
    }))

  it.effect("without a ResultCache layer the batch keeps its own: a repeated item is served once it has settled", () =>
    Effect.gen(function*() {
      let calls = 0
      const { results } = yield* Batch.run(["x", "y", "x", "x"], (s: string) => Effect.sync(() => (calls++, s)), {
        concurrency: 1,
        cache: { key: (s: string) => s }
      })
      expect(calls).toBe(2)
      expect(results.map((r) => r._tag === "Succeeded" && r.source)).toEqual(["call", "call", "cache", "cache"])
    }))

  it.effect("failures are not cached", () =>
    Effect.gen(function*() {
      let calls = 0
      const task = () => Effect.sync(() => calls++).pipe(Effect.zipRight(Effect.fail(new TaskError.Permanent({}))))
      yield* Batch.run(["a"], task, { cache: { key: (s: string) => s } })
      yield* Batch.run(["a"], task, { cache: { key: (s: string) => s } })
      expect(calls).toBe(2)
      expect(yield* Effect.flatMap(ResultCache.ResultCache, (store) => store.size)).toBe(0)
    }).pipe(Effect.provide(ResultCache.layerMemory())))
})
