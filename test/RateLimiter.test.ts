import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, FastCheck, Fiber, TestClock } from "effect"
import * as RateLimiter from "../src/RateLimiter.js"
import { joinOnTestClock } from "./support/TestTime.js"

interface Grant {
  readonly at: number
  readonly requests: number
  readonly tokens: number
}

/** The most units of `unit` granted in any interval [t_i, t_j], minus what the limit allows in it. */
const worstExcess = (
  grants: ReadonlyArray<Grant>,
  unit: "requests" | "tokens",
  limit: number,
  windowMs: number,
  burst: number
) => {
  const sorted = [...grants].sort((a, b) => a.at - b.at)
  const largest = Math.max(0, ...sorted.map((g) => g[unit]))
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < sorted.length; i++) {
    let used = 0
    for (let j = i; j < sorted.length; j++) {
      used += sorted[j]![unit]
      const allowed = Math.max(burst, largest) + (limit * (sorted[j]!.at - sorted[i]!.at)) / windowMs
      worst = Math.max(worst, used - allowed)
    }
  }
  return worst
}

const runCallers = (
  limiter: RateLimiter.Limiter,
  callers: ReadonlyArray<{ readonly offset: number, readonly requests: number, readonly tokens: number }>
) =>
  Effect.gen(function*() {
    const grants: Array<Grant> = []
    const fiber = yield* Effect.forEach(callers, ({ offset, requests, tokens }) =>
      Effect.gen(function*() {
        yield* Effect.sleep(offset)
        yield* limiter.acquire({ requests, tokens })
        grants.push({ at: yield* Clock.currentTimeMillis, requests, tokens })
      }), { concurrency: "unbounded", discard: true }).pipe(Effect.fork)
    yield* joinOnTestClock(fiber, "1 days")
    return grants
  })

describe("RateLimiter", () => {
  it.effect.prop(
    "never more starts or tokens in any interval than the limits allow: max(burst, largest cost) + limit × t / window " +
      "(a widening burst: at most a second's worth)",
    {
      rps: FastCheck.integer({ min: 1, max: 50 }),
      window: FastCheck.integer({ min: 100, max: 5000 }),
      burst: FastCheck.option(FastCheck.integer({ min: 1, max: 5 }), { nil: undefined }),
      tpw: FastCheck.integer({ min: 50, max: 5000 }),
      callers: FastCheck.array(
        FastCheck.record({
          offset: FastCheck.integer({ min: 0, max: 3000 }),
          requests: FastCheck.constant(1),
          tokens: FastCheck.integer({ min: 0, max: 800 })
        }),
        { minLength: 1, maxLength: 40 }
      )
    },
    ({ burst, callers, rps, tpw, window }) =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make({
          limits: [
            { unit: "requests", limit: rps, window, burst },
            { unit: "tokens", limit: tpw, window }
          ]
        })
        const grants = yield* runCallers(limiter, callers)
        expect(grants.length).toBe(callers.length)
        // Units are whole; what is left is floating-point noise of fractional-millisecond grant times
        // (seen: 2.2e-6 tokens with 667-token calls on a 496-token window).
        const widest = burst ?? Math.max(1, (rps * 1000) / window)
        expect(worstExcess(grants, "requests", rps, window, widest)).toBeLessThanOrEqual(1e-3)
        expect(worstExcess(grants, "tokens", tpw, window, 1)).toBeLessThanOrEqual(1e-3)
      }),
    { fastCheck: { numRuns: 40 }, timeout: 180_000 }
  )

  it.effect("a burst of 1 spreads calls evenly over the window instead of bursting at its start", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 5, burst: 1 })
      const grants = yield* runCallers(limiter, Array.from({ length: 6 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      expect(grants.map((g) => g.at)).toEqual([0, 200, 400, 600, 800, 1000])
    }))

  it.effect("with no burst given, a request limit's burst widens from 1 as the limit holds calls back, up to a second's worth", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerMinute: 600, tokensPerMinute: 60_000 })
      expect(yield* limiter.bursts).toEqual([1, 1])
      // An idle limiter does not widen: calls that find credit are not held back.
      for (let i = 0; i < 3; i++) {
        expect(limiter.unsafeTryAcquire()).toBeDefined()
        yield* TestClock.adjust("1 second")
      }
      expect(yield* limiter.bursts).toEqual([1, 1])
      const grants = yield* runCallers(limiter, Array.from({ length: 60 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const times = grants.map((g) => g.at - 3000).sort((a, b) => a - b)
      // Evenly spaced (100 ms) until it has held back a second's worth of starts, then 1.5× the limit while the
      // burst widens by a third per start, until the burst holds a second's worth (10) …
      expect(times.slice(0, 13).map((t) => Math.round(t))).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1167])
      expect(yield* limiter.bursts).toEqual([10, 1])
      // … so 60 calls take 5 s instead of 5.9 s, never more than the limit allows with that burst.
      expect(times.at(-1)!).toBeCloseTo(5000, 6)
      expect(worstExcess(grants, "requests", 10, 1000, 10)).toBeLessThanOrEqual(1e-3)
    }))

  it.effect("a 429 under a known limit halves a widened burst and stops its widening; so does the provider saying little is left", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 20 })
      yield* runCallers(limiter, Array.from({ length: 60 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const [widened] = yield* limiter.bursts
      expect(widened).toBeGreaterThan(8)
      yield* limiter.closeGate("50 millis")
      expect(yield* limiter.bursts).toEqual([Math.floor(widened! / 2)])
      yield* runCallers(limiter, Array.from({ length: 40 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      expect(yield* limiter.bursts).toEqual([Math.floor(widened! / 2)])

      const told = yield* RateLimiter.make({ requestsPerSecond: 20 })
      yield* runCallers(told, Array.from({ length: 30 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      yield* told.remaining("requests", 10) // plenty left: widening goes on
      yield* told.remaining("tokens", 0) // another unit: nothing to do with it
      const [before] = yield* told.bursts
      yield* runCallers(told, Array.from({ length: 6 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const [after] = yield* told.bursts
      expect(after).toBeGreaterThan(before!)
      yield* told.remaining("requests", 2) // under 20 × 0.1 + 1
      yield* runCallers(told, Array.from({ length: 6 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      expect(yield* told.bursts).toEqual([after])
    }))

  it.effect("a configured burst does not widen", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 20, burst: 2 })
      yield* runCallers(limiter, Array.from({ length: 40 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      expect(yield* limiter.bursts).toEqual([2])
    }))

  it.effect("a burst lets that many calls start at once, then paces the rest", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 5, burst: 3 })
      const grants = yield* runCallers(limiter, Array.from({ length: 5 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      expect(grants.map((g) => g.at)).toEqual([0, 0, 0, 200, 400])
    }))

  it.effect("a call costing more than the burst goes into debt instead of starving", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ tokensPerSecond: 100 })
      const grants = yield* runCallers(limiter, [
        { offset: 0, requests: 1, tokens: 300 },
        { offset: 1, requests: 1, tokens: 10 },
        { offset: 2, requests: 1, tokens: 10 }
      ])
      expect(grants.map((g) => g.at)).toEqual([0, 3000, 3100])
    }))

  it.effect("settling a reservation with fewer tokens gives the difference back", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ tokensPerSecond: 100 })
      const first = yield* limiter.acquire({ tokens: 500 })
      yield* limiter.settle(first, { tokens: 100 })
      const fiber = yield* Effect.fork(Effect.zipRight(limiter.acquire({ tokens: 50 }), Clock.currentTimeMillis))
      expect(yield* joinOnTestClock(fiber, "10 seconds")).toBe(1000)
    }))

  it.effect("the cooldown gate holds every caller until it opens, then paces them", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 10 })
      yield* limiter.closeGate("20 seconds")
      expect(yield* limiter.closeGate("5 seconds")).toBe(false) // never shortened
      const grants = yield* runCallers(limiter, Array.from({ length: 3 }, (_, i) => ({ offset: i * 1000, requests: 1, tokens: 0 })))
      expect(grants.map((g) => g.at)).toEqual([20_000, 20_100, 20_200])
    }))

  it.effect("an unlimited limiter still has a gate, and paces the reopening by what it learned", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make()
      expect(limiter.unsafeTryAcquire()).toBeDefined()
      expect(yield* limiter.pace).toBeUndefined()
      yield* limiter.closeGate("3 seconds")
      expect(limiter.unsafeTryAcquire()).toBeUndefined()
      // One start in the second before the 429: half of that, then grown by a fifth per second
      // (so 0.8 per second when the gate opens, 3 s later: the second start waits 1 250 ms).
      expect(yield* limiter.pace).toBeCloseTo(0.5)
      const grants = yield* runCallers(limiter, [{ offset: 0, requests: 1, tokens: 0 }, { offset: 0, requests: 1, tokens: 0 }])
      expect(grants.map((g) => g.at)).toEqual([3000, 4250])
    }))

  it.effect("no storm: after a 429 an unlimited limiter paces 20 eager callers at half the rate it saw, not all at once", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make()
      // 400 starts in the second before the 429 (20 callers, 50 ms round trips).
      for (let i = 0; i < 400; i++) {
        expect(limiter.unsafeTryAcquire()).toBeDefined()
        if (i % 20 === 19) yield* TestClock.adjust("50 millis")
      }
      // The 429s of the 20 calls in flight: one episode, one decrease.
      for (let i = 0; i < 20; i++) yield* limiter.closeGate("10 millis")
      expect(yield* limiter.pace).toBeCloseTo(200)
      const grants = yield* runCallers(limiter, Array.from({ length: 20 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const times = grants.map((g) => g.at).sort((a, b) => a - b)
      expect(times[0]).toBe(1010)
      // Spaced by the pace (200/s → 5 ms, a little less as it grows), never together.
      for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThan(4.9)
      expect(times[times.length - 1]! - times[0]!).toBeGreaterThan(19 * 4.9)
    }))

  it.effect("each later episode cuts the pace to 0.7 of itself; between them it grows back by a fifth per second", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make()
      // 100 starts in the second before the first 429: half of that.
      for (let i = 0; i < 100; i++) limiter.unsafeTryAcquire()
      yield* limiter.closeGate("10 millis")
      expect(yield* limiter.pace).toBeCloseTo(50)
      yield* TestClock.adjust("500 millis")
      yield* limiter.closeGate("10 millis") // the same episode (within a second): no change but growth
      expect(yield* limiter.pace).toBeCloseTo(50 * 1.1)
      yield* TestClock.adjust("4500 millis")
      expect(yield* limiter.pace).toBeCloseTo(100) // 50 × (1 + 0.2 × 5)
      yield* limiter.closeGate("10 millis")
      expect(yield* limiter.pace).toBeCloseTo(70)
      // Never below 3 a minute (each round: × 1.2, then × 0.7).
      for (let i = 0; i < 60; i++) {
        yield* TestClock.adjust("1 second")
        yield* limiter.closeGate("10 millis")
      }
      expect(yield* limiter.pace).toBeCloseTo(0.05)
    }))

  it.effect("starts reserved ahead drain at the learned pace as it grows, not at the pace they were reserved at", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make()
      for (let i = 0; i < 100; i++) limiter.unsafeTryAcquire()
      yield* limiter.closeGate("10 millis") // pace 50/s: one start per 20 ms from 10 ms on
      // Ten callers reserve at once: starts at 10, 30, …, 190; the next would be 210.
      const first = yield* Effect.fork(Effect.forEach(Array.from({ length: 10 }), () => limiter.acquire(), { concurrency: "unbounded" }))
      yield* TestClock.adjust("100 millis")
      // By 100 ms the pace is ~51/s (50 × 1.02): what was reserved beyond now drains at that pace, so the next start
      // comes ~2 ms before 210 (at the old pace: 210 exactly).
      const late = yield* Effect.fork(Effect.zipRight(limiter.acquire(), Clock.currentTimeMillis))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(first)
      const at = yield* Fiber.join(late)
      expect(at).toBeLessThan(209)
      expect(at).toBeGreaterThan(100 + (210 - 100) * (50 / 52))
    }))

  it.effect("a known request limit paces alone: a 429 under it teaches no pace, and a pace learned before goes out of force", () =>
    Effect.gen(function*() {
      const told = yield* RateLimiter.make({ requestsPerSecond: 100 })
      expect(told.unsafeTryAcquire()).toBeDefined()
      yield* told.closeGate("10 millis")
      expect(yield* told.pace).toBeUndefined()
      // After the gate, starts go at the told rate (10 ms apart), not at half of it.
      const grants = yield* runCallers(told, Array.from({ length: 5 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const times = grants.map((g) => g.at).sort((a, b) => a - b)
      expect(times.slice(1).map((t, i) => t - times[i]!)).toEqual([10, 10, 10, 10])

      const untold = yield* RateLimiter.make()
      untold.unsafeTryAcquire()
      yield* untold.closeGate("10 millis")
      expect(yield* untold.pace).toBeCloseTo(0.5)
      // The provider then announces its limit (x-ratelimit-* headers): that limit paces from now on.
      expect(yield* RateLimiter.learn(untold, { requestsPerMinute: 6000 })).toBe(true)
      expect(yield* untold.pace).toBeUndefined()
      yield* TestClock.adjust("1 second")
      const after = yield* runCallers(untold, Array.from({ length: 3 }, () => ({ offset: 0, requests: 1, tokens: 0 })))
      const at = after.map((g) => g.at).sort((a, b) => a - b)
      expect(at.slice(1).map((t, i) => t - at[i]!)).toEqual([10, 10])
    }))

  it.effect("limits can be replaced while calls wait", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ requestsPerSecond: 1 })
      const times: Array<number> = []
      const fiber = yield* Effect.forEach(Array.from({ length: 4 }), () =>
        Effect.zipRight(limiter.acquire(), Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => times.push(t)))), {
        concurrency: 1,
        discard: true
      }).pipe(Effect.fork)
      yield* TestClock.adjust("1 millis")
      yield* limiter.setLimits({ requestsPerSecond: 10 })
      yield* joinOnTestClock(fiber, "10 seconds")
      // The second call keeps its reservation at t=1000; the debt it left drains at the new rate.
      expect(times).toEqual([0, 1000, 1000, 1100])
      expect((yield* limiter.limits).map((l) => l.limit)).toEqual([10])
    }))

  it("rejects bad limits, naming them", () => {
    expect(() => RateLimiter.normalize({ requestsPerMinute: 0 })).toThrow(/requestsPerMinute must be a finite number > 0, got 0/)
    expect(() => RateLimiter.normalize({ limits: [{ unit: "requests", limit: 5, window: 0 }] })).toThrow(/window > 0/)
    expect(() => RateLimiter.normalize({ tokensPerMinute: 10, burst: 0 })).toThrow(/burst must be ≥ 1, got 0/)
  })
})
