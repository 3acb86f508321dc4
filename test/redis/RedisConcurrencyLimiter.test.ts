/**
 * RedisConcurrencyLimiter against the real Redis of the machine (REDIS_URL;
 * without it the suite is reported as skipped). Limiters on separate
 * connections stand for separate processes. What is asserted is how many
 * calls were in flight at once over all of them, and what is left in Redis,
 * never how fast anything ran.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as Batch from "../../src/Batch.js"
import * as ConcurrencyLimiter from "../../src/ConcurrencyLimiter.js"
import * as RedisConcurrencyLimiter from "../../src/redis/RedisConcurrencyLimiter.js"
import { connect, uniqueName, url } from "../support/redisClients.js"

const keyOf = (name: string) => `effect-batch:concurrency:${name}`

/** Counts the calls in flight over every limiter, and the most at once. */
const gauge = () => {
  let now = 0
  let peak = 0
  const call = (ms: number) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        now++
        peak = Math.max(peak, now)
      }),
      () => Effect.sleep(ms),
      () => Effect.sync(() => now--)
    )
  return { call, peak: () => peak, now: () => now }
}

/** Leases held in Redis now, over every holder. */
const leasesIn = (name: string) =>
  Effect.promise(async () => {
    const all = await connect().hgetall(keyOf(name))
    return Object.entries(all).filter(([field]) => !field.startsWith("exp:")).reduce((sum, [, n]) => sum + Number(n), 0)
  })

describe.skipIf(url === undefined)("RedisConcurrencyLimiter", () => {
  it.live("three limiters on three connections, each allowed the whole limit alone: together never more in flight than the limit", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const limiters = yield* Effect.forEach([1, 2, 3], () => RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 5 }))
      const { call, peak } = gauge()
      const results = yield* Effect.forEach(limiters, (limiter) =>
        Batch.run(Array.from({ length: 30 }, (_, i) => i), () => call(15)).pipe(
          Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
        ), { concurrency: "unbounded" })
      const all = results.flatMap((r) => r.results)
      expect(all).toHaveLength(90)
      expect(all.every((r) => r._tag === "Succeeded")).toBe(true)
      expect(peak()).toBe(5)
      // Every lease went back.
      yield* Effect.sleep("50 millis")
      expect(yield* leasesIn(name)).toBe(0)
    }).pipe(Effect.scoped))

  it.live("an interrupted batch gives back every lease, those of its calls and of its workers still waiting", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const a = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 4 })
      const b = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 4 })
      const stuck = (limiter: ConcurrencyLimiter.Limiter) =>
        Effect.fork(Batch.run(Array.from({ length: 20 }, (_, i) => i), () => Effect.never).pipe(
          Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
        ))
      const fibers = [yield* stuck(a), yield* stuck(b)]
      yield* Effect.sleep("150 millis")
      expect(yield* leasesIn(name)).toBe(4)
      yield* Fiber.interruptAll(fibers)
      yield* Effect.sleep("50 millis")
      expect(yield* leasesIn(name)).toBe(0)
    }).pipe(Effect.scoped))

  it.live("withPermit shares the limit too; a waiter interrupted leaves no lease behind", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const a = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 2 })
      const b = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 2 })
      const { call, peak } = gauge()
      const holding = yield* Effect.fork(Effect.all([a.withPermit(call(300)), a.withPermit(call(300))], { concurrency: "unbounded" }))
      yield* Effect.sleep("100 millis")
      // b's own limiter has room, the shared limit has none: it waits, and is interrupted waiting.
      const waiting = yield* Effect.fork(b.withPermit(call(10)))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(waiting)
      yield* Fiber.join(holding)
      yield* Effect.sleep("50 millis")
      expect(peak()).toBe(2)
      expect(yield* leasesIn(name)).toBe(0)
      // And b gets the whole limit once a has let go.
      yield* Effect.all([b.withPermit(call(10)), b.withPermit(call(10))], { concurrency: "unbounded" })
    }).pipe(Effect.scoped))

  it.live("the leases of a process that stopped renewing them come back once they expire, not before", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const redis = connect()
      // A process that took all 3 leases and died: its expiry is 400 ms from now on the server's clock.
      const [seconds, micros] = yield* Effect.promise(() => redis.time())
      const serverNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
      yield* Effect.promise(() => redis.hset(keyOf(name), "dead", 3, "exp:dead", serverNow + 400))
      const limiter = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 3 })
      const started = Date.now()
      yield* limiter.withPermit(Effect.void)
      // The server's clock and ours run together; 400 ms less a few for the reads in between.
      expect(Date.now() - started).toBeGreaterThanOrEqual(350)
      const left = yield* Effect.promise(() => connect().hgetall(keyOf(name)))
      expect(left["dead"]).toBeUndefined()
      expect(left["exp:dead"]).toBeUndefined()
      expect(yield* Effect.promise(() => connect().pttl(keyOf(name)))).toBeGreaterThan(0)
    }).pipe(Effect.scoped))

  it.live("a closed limiter gives its leases back at once; a limit below 1 is refused", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const other = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 1 })
      yield* Effect.scoped(Effect.gen(function*() {
        const limiter = yield* RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 1, leaseTtl: "1 minute" })
        const holder = yield* Effect.fork(limiter.withPermit(Effect.never))
        yield* Effect.sleep("100 millis")
        expect(yield* leasesIn(name)).toBe(1)
        yield* Fiber.interrupt(holder).pipe(Effect.fork)
      }))
      // Without the leave on close it would wait a minute.
      yield* other.withPermit(Effect.void).pipe(Effect.timeout("5 seconds"))
      const refused = yield* Effect.exit(RedisConcurrencyLimiter.make({ redis: connect(), name, limit: 0 }))
      expect(String(refused)).toContain("limit must be an integer ≥ 1, got 0")
    }).pipe(Effect.scoped))
})
