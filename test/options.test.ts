/**
 * Under `exactOptionalPropertyTypes`, every optional option field takes an
 * explicit `undefined`, and it means what leaving the field out means.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as LimitAlgorithm from "../src/LimitAlgorithm.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as ResultCache from "../src/ResultCache.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TaskError from "../src/TaskError.js"

const sample: LimitAlgorithm.Sample = { startedAt: 0, latencyMs: 120, inFlight: 4, dropped: false }

/** The same bounds, start and response to a sample as `expected`. */
const expectSameAs = <S>(actual: LimitAlgorithm.LimitAlgorithm<S>, expected: LimitAlgorithm.LimitAlgorithm<S>) => {
  expect([actual.min, actual.max, actual.initial]).toEqual([expected.min, expected.max, expected.initial])
  expect(actual.limit(actual.update(actual.initial, sample))).toBe(expected.limit(expected.update(expected.initial, sample)))
}

describe("options given as undefined", () => {
  it("LimitAlgorithm.aimd and gradient: the defaults", () => {
    const aimd = LimitAlgorithm.aimd({
      initial: undefined,
      min: undefined,
      max: undefined,
      increase: undefined,
      backoffRatio: undefined,
      timeoutMs: undefined
    })
    expectSameAs(aimd, LimitAlgorithm.aimd())
    const gradient = LimitAlgorithm.gradient({
      initial: undefined,
      min: undefined,
      max: undefined,
      smoothing: undefined,
      rttTolerance: undefined,
      longWindow: undefined,
      queueSize: undefined
    })
    expectSameAs(gradient, LimitAlgorithm.gradient())
  })

  it.effect("RateLimiter.make: no limits, as with none given", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({
        requestsPerSecond: undefined,
        requestsPerMinute: undefined,
        tokensPerSecond: undefined,
        tokensPerMinute: undefined,
        burst: undefined,
        limits: undefined
      })
      expect(yield* limiter.limits).toEqual(yield* (yield* RateLimiter.make()).limits)
      const told = yield* RateLimiter.make({ requestsPerMinute: 60, tokensPerMinute: undefined, burst: undefined })
      expect(yield* told.limits).toEqual(yield* (yield* RateLimiter.make({ requestsPerMinute: 60 })).limits)
      expect(limiter.unsafeTryAcquire({ requests: undefined, tokens: undefined })).toBeDefined()
    }))

  it.effect("RetryPolicy.make: the default attempts", () =>
    Effect.gen(function*() {
      const retries = (policy: RetryPolicy.Policy) =>
        Effect.gen(function*() {
          let state = RetryPolicy.initial(policy)
          for (let n = 0; ; n++) {
            const next = yield* RetryPolicy.step(policy, state, new TaskError.Transient({ message: "503" }), 0)
            if (next === undefined) return n
            state = next.state
          }
        })
      const policy = RetryPolicy.make({
        maxAttempts: undefined,
        base: undefined,
        factor: undefined,
        maxDelay: undefined,
        jitter: undefined
      })
      expect(yield* retries(policy)).toBe(yield* retries(RetryPolicy.make()))
      expect(yield* retries(policy)).toBe(4)
    }))

  it.effect("ResultCache.makeMemory: unbounded, as with no capacity", () =>
    Effect.gen(function*() {
      const cache = yield* ResultCache.makeMemory({ capacity: undefined })
      for (let i = 0; i < 2_000; i++) yield* cache.set(`k${i}`, i)
      expect(yield* cache.size).toBe(2_000)
    }))
})
