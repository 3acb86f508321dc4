import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, FastCheck, Schedule } from "effect"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TaskError from "../src/TaskError.js"

/** Steps a policy with `failures` from t=0, returning the delays until it stops. */
const delays = (policy: RetryPolicy.Policy, failures: ReadonlyArray<TaskError.TaskError>) =>
  Effect.gen(function*() {
    let state = RetryPolicy.initial(policy)
    let now = 0
    const out: Array<number> = []
    for (const failure of failures) {
      const decision = yield* RetryPolicy.step(policy, state, failure, now)
      if (decision === undefined) return { delays: out, stopped: true }
      out.push(decision.delayMillis)
      state = decision.state
      now += decision.delayMillis
    }
    return { delays: out, stopped: false }
  })

const backoffFailure = FastCheck.constantFrom<TaskError.TaskError>(
  new TaskError.Transient({}),
  new TaskError.Timeout({}),
  new TaskError.Overloaded({})
)

describe("RetryPolicy", () => {
  it.effect.prop(
    "default policy: each delay lies in [(1 - jitter) × d, d] with d = min(maxDelay, base × factor^n); stops after maxAttempts",
    {
      maxAttempts: FastCheck.integer({ min: 1, max: 8 }),
      base: FastCheck.integer({ min: 1, max: 2000 }),
      factor: FastCheck.double({ min: 1, max: 4, noNaN: true }),
      capFactor: FastCheck.double({ min: 1, max: 50, noNaN: true }),
      jitter: FastCheck.double({ min: 0, max: 1, noNaN: true }),
      failures: FastCheck.array(backoffFailure, { minLength: 10, maxLength: 10 })
    },
    ({ base, capFactor, factor, failures, jitter, maxAttempts }) =>
      Effect.gen(function*() {
        const maxDelay = base * capFactor
        const policy = RetryPolicy.make({ maxAttempts, base: Duration.millis(base), factor, maxDelay: Duration.millis(maxDelay), jitter })
        const result = yield* delays(policy, failures)
        expect(result.stopped).toBe(true)
        expect(result.delays.length).toBe(maxAttempts - 1)
        result.delays.forEach((delay, n) => {
          const d = Math.min(maxDelay, base * factor ** n)
          expect(delay).toBeGreaterThanOrEqual((1 - jitter) * d - 1e-6)
          expect(delay).toBeLessThanOrEqual(d + 1e-6)
        })
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect.prop(
    "a retryAfter is waited exactly, however large",
    { seconds: FastCheck.integer({ min: 1, max: 3600 }), overloaded: FastCheck.boolean() },
    ({ overloaded, seconds }) =>
      Effect.gen(function*() {
        const retryAfter = Duration.seconds(seconds)
        const failure = overloaded ? new TaskError.Overloaded({ retryAfter }) : new TaskError.RateLimited({ retryAfter })
        // A RateLimited one does not count toward maxAttempts: the third is retried too.
        const result = yield* delays(RetryPolicy.make({ maxAttempts: 3, maxRateLimitWait: "1 day" }), [failure, failure, failure])
        expect(result.delays).toEqual(overloaded ? [seconds * 1000, seconds * 1000] : [seconds * 1000, seconds * 1000, seconds * 1000])
      })
  )

  it.effect("Permanent and QuotaExhausted are final at once, even under a schedule that would retry", () =>
    Effect.gen(function*() {
      const forever = RetryPolicy.fromSchedule(Schedule.spaced("1 second"))
      for (const policy of [RetryPolicy.make({ maxAttempts: 10 }), forever]) {
        expect(yield* delays(policy, [new TaskError.Permanent({})])).toEqual({ delays: [], stopped: true })
        expect(yield* delays(policy, [new TaskError.QuotaExhausted({})])).toEqual({ delays: [], stopped: true })
      }
      const transient = Array.from({ length: 5 }, () => new TaskError.Transient({}))
      expect(yield* delays(forever, transient)).toEqual({ delays: [1000, 1000, 1000, 1000, 1000], stopped: false })
    }))

  it.effect.prop(
    "RateLimited failures do not count toward maxAttempts: the others still stop the item after maxAttempts of them",
    {
      maxAttempts: FastCheck.integer({ min: 1, max: 6 }),
      failures: FastCheck.array(FastCheck.boolean(), { minLength: 20, maxLength: 20 })
    },
    ({ failures, maxAttempts }) =>
      Effect.gen(function*() {
        const limited = new TaskError.RateLimited({ retryAfter: Duration.millis(10) })
        const errors = failures.map((isLimited) => (isLimited ? limited : new TaskError.Transient({})))
        const policy = RetryPolicy.make({ maxAttempts, base: "1 millis", maxDelay: "1 millis" })
        const result = yield* delays(policy, errors)
        // The failure that stopped it, and how many that count came before and with it.
        const seen = errors.slice(0, result.delays.length + 1)
        const counted = seen.filter((error) => error._tag !== "RateLimited").length
        if (result.stopped) {
          expect(seen[seen.length - 1]!._tag).toBe("Transient")
          expect(counted).toBe(maxAttempts)
        } else {
          expect(counted).toBeLessThan(maxAttempts)
        }
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect("RateLimited failures are retried for maxRateLimitWait from the item's first one, then the next is final", () =>
    Effect.gen(function*() {
      const limited = new TaskError.RateLimited({ retryAfter: Duration.seconds(1) })
      const many = Array.from({ length: 100 }, () => limited)
      // Failures at t = 0, 1, …, 5 s: those before 5 s are retried, the one at 5 s is final.
      const five = yield* delays(RetryPolicy.make({ maxAttempts: 2, maxRateLimitWait: "5 seconds" }), many)
      expect(five).toEqual({ delays: [1000, 1000, 1000, 1000, 1000], stopped: true })
      // The default: ten minutes, at the provider's pace, with maxAttempts 1.
      const tenMinutes = yield* delays(RetryPolicy.make({ maxAttempts: 1 }), Array.from({ length: 700 }, () => limited))
      expect(tenMinutes.stopped).toBe(true)
      expect(tenMinutes.delays.length).toBe(600)
      expect(RetryPolicy.defaults.maxRateLimitWait).toEqual(Duration.minutes(10))
      // 0: a RateLimited failure is final at once.
      expect(yield* delays(RetryPolicy.make({ maxRateLimitWait: 0 }), [limited])).toEqual({ delays: [], stopped: true })
    }))

  it.effect("none never retries", () =>
    Effect.gen(function*() {
      expect(yield* delays(RetryPolicy.none, [new TaskError.Transient({})])).toEqual({ delays: [], stopped: true })
    }))

  it("rejects options out of range, naming them", () => {
    expect(() => RetryPolicy.make({ maxAttempts: 0 })).toThrow(/maxAttempts must be an integer ≥ 1, got 0/)
    expect(() => RetryPolicy.make({ base: 0 })).toThrow(/base must be > 0/)
    expect(() => RetryPolicy.make({ factor: 0.5 })).toThrow(/factor must be ≥ 1, got 0.5/)
    expect(() => RetryPolicy.make({ jitter: 2 })).toThrow(/jitter must be in \[0, 1\], got 2/)
    expect(() => RetryPolicy.make({ base: "10 seconds", maxDelay: "1 second" })).toThrow(/maxDelay must be ≥ base/)
  })
})
