import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck, Option } from "effect"
import * as ResultCache from "../../src/ResultCache.js"
import { conformance } from "./conformance.js"

conformance("ResultCache.layerMemory", ResultCache.layerMemory())
conformance("ResultCache.layerMemory({ capacity: 5000 })", ResultCache.layerMemory({ capacity: 5000 }))

describe("ResultCache.layerMemory capacity", () => {
  it.effect("evicts the least recently read or written entry", () =>
    Effect.gen(function*() {
      const cache = yield* ResultCache.makeMemory({ capacity: 2 })
      yield* cache.set("a", 1)
      yield* cache.set("b", 2)
      yield* cache.get("a")
      yield* cache.set("c", 3)
      expect(yield* cache.get("b")).toEqual(Option.none())
      expect(yield* cache.getMany(["a", "c"])).toEqual(new Map([["a", 1], ["c", 3]]))
      yield* cache.set("a", 10)
      yield* cache.set("d", 4)
      expect(yield* cache.get("c")).toEqual(Option.none())
      expect(yield* cache.get("a")).toEqual(Option.some(10))
      expect(yield* cache.size).toBe(2)
    }))

  it.effect.prop(
    "never holds more than capacity, and always holds the last key written",
    {
      capacity: FastCheck.integer({ min: 1, max: 8 }),
      ops: FastCheck.array(FastCheck.tuple(FastCheck.constantFrom("get", "set", "delete"), FastCheck.integer({ min: 0, max: 15 })), {
        minLength: 1,
        maxLength: 60
      })
    },
    ({ capacity, ops }) =>
      Effect.gen(function*() {
        const cache = yield* ResultCache.makeMemory({ capacity })
        for (const [op, k] of ops) {
          if (op === "set") {
            yield* cache.set(`k${k}`, k)
            expect(yield* cache.get(`k${k}`)).toEqual(Option.some(k))
          } else if (op === "get") {
            yield* cache.get(`k${k}`)
          } else {
            yield* cache.delete(`k${k}`)
          }
          expect(yield* cache.size).toBeLessThanOrEqual(capacity)
        }
      })
  )

  it("a capacity that is not an integer ≥ 1 throws, naming it", () => {
    for (const capacity of [0, -1, 1.5, Number.NaN]) {
      expect(() => ResultCache.layerMemory({ capacity })).toThrow(/^ResultCache\.layerMemory: capacity must be an integer ≥ 1/)
    }
  })
})
