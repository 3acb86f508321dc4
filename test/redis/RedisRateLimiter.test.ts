/**
 * RedisRateLimiter against the real Redis of the machine (REDIS_URL; without
 * it the suite is reported as skipped). Two limiters on two connections stand
 * for two processes. Time is the Redis server's and the wall clock's, so what
 * is asserted are the schedules Redis handed out (never more starts than the
 * limits allow, whoever asked) and what one limiter does to the other, not how
 * fast anything ran.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { execFile } from "node:child_process"
import * as Batch from "../../src/Batch.js"
import * as RateLimiter from "../../src/RateLimiter.js"
import * as RedisRateLimiter from "../../src/redis/RedisRateLimiter.js"
import { connect, uniqueName, url } from "../support/redisClients.js"

const root = new URL("../../", import.meta.url).pathname
/** The most starts scheduled in any interval, minus what `perSecond` with `burst` allows in it. */
const worstExcess = (scheduled: ReadonlyArray<number>, perSecond: number, burst: number) => {
  const sorted = [...scheduled].sort((a, b) => a - b)
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < sorted.length; i++) {
    for (let j = i; j < sorted.length; j++) {
      worst = Math.max(worst, j - i + 1 - (burst + (perSecond * (sorted[j]! - sorted[i]!)) / 1000))
    }
  }
  return worst
}

describe.skipIf(url === undefined)("RedisRateLimiter", () => {
  it.live("two limiters on two connections: their starts together keep to the limit; each alone would have gone twice as fast", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const a = yield* RedisRateLimiter.make({ redis: connect(), name, limits: { requestsPerSecond: 20 } })
      const b = yield* RedisRateLimiter.make({ redis: connect(), name, limits: { requestsPerSecond: 20 } })
      const calls = (limiter: RedisRateLimiter.Limiter) =>
        Effect.forEach(Array.from({ length: 10 }), () => limiter.acquire(), {
          concurrency: "unbounded"
        })
      const [fromA, fromB] = yield* Effect.all([calls(a), calls(b)], { concurrency: "unbounded" })
      const scheduled = [...fromA, ...fromB].map((r) => r.scheduledAt)
      expect(worstExcess(scheduled, 20, 1)).toBeLessThanOrEqual(1e-3)
      // 20 starts at 20/s, one at once: the last is scheduled 950 ms after the first.
      expect(Math.max(...scheduled) - Math.min(...scheduled)).toBeGreaterThanOrEqual(950 - 1e-3)
    }))

  it.live("two real processes: their starts together keep to the limit", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const child = () =>
        Effect.promise(() =>
          new Promise<ReadonlyArray<number>>((resolve, reject) => {
            const script = new URL("../support/redisLimiterProcess.ts", import.meta.url).pathname
            execFile(process.execPath, ["--import", "tsx", script, url!, name, "10"], { cwd: root }, (error, stdout) =>
              error === null ? resolve(JSON.parse(stdout.trim().split("\n").pop()!)) : reject(error))
          }))
      const [one, two] = yield* Effect.all([child(), child()], { concurrency: "unbounded" })
      expect([one.length, two.length]).toEqual([10, 10])
      const scheduled = [...one, ...two]
      expect(worstExcess(scheduled, 20, 1)).toBeLessThanOrEqual(1e-3)
      expect(Math.max(...scheduled) - Math.min(...scheduled)).toBeGreaterThanOrEqual(950 - 1e-3)
    }), 60_000)

  it.live("requests and tokens are reserved together, and a settled over-estimate is given back", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const limits = { requestsPerSecond: 100, tokensPerSecond: 1_000 }
      const a = yield* RedisRateLimiter.make({ redis: connect(), name, limits })
      const b = yield* RedisRateLimiter.make({ redis: connect(), name, limits })
      const first = (yield* a.acquire({ tokens: 500 }))
      // Estimated 500, used 100: the other process's next call need not wait for the 400 never spent.
      yield* a.settle(first, { tokens: 100 })
      const second = (yield* b.acquire({ tokens: 100 }))
      expect(second.scheduledAt - first.scheduledAt).toBeLessThan(150) // 100 tokens at 1 000/s: 100 ms, not 500
      expect(second.scheduledAt - first.scheduledAt).toBeGreaterThanOrEqual(100 - 1e-3)
    }))

  it.live("a 429 seen by one process closes the gate for the other, never shortened, and the reopening is paced", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const a = yield* RedisRateLimiter.make({ redis: connect(), name, limits: { requestsPerSecond: 50 } })
      const b = yield* RedisRateLimiter.make({ redis: connect(), name, limits: { requestsPerSecond: 50 } })
      const before = (yield* b.acquire())
      expect(yield* a.closeGate("300 millis")).toBe(true)
      expect(yield* a.closeGate("100 millis")).toBe(false)
      expect((yield* b.gateOpensAt) - Date.now()).toBeGreaterThan(150)
      const after = yield* Effect.forEach(Array.from({ length: 3 }), () => b.acquire(), {
        concurrency: "unbounded"
      })
      const times = after.map((r) => r.scheduledAt).sort((x, y) => x - y)
      expect(times[0]! - before.scheduledAt).toBeGreaterThanOrEqual(300 - 5)
      expect(times[1]! - times[0]!).toBeCloseTo(20, 3)
      expect(times[2]! - times[1]!).toBeCloseTo(20, 3)
      expect(after.every((r) => r.gateWaitedMillis + r.waitedMillis >= 0)).toBe(true)
      // The last of them, scheduled 340 ms after the gate closed, slept for its turn on this process's clock.
      const last = after.find((r) => r.scheduledAt === times[2])!
      expect(last.waitedMillis + last.gateWaitedMillis).toBeGreaterThan(0)
    }))

  it.live("the hash expires after use: nothing is left behind", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const redis = connect()
      const limiter = yield* RedisRateLimiter.make({ redis, name, limits: { requestsPerMinute: 600 } })
      yield* limiter.acquire()
      const ttl = yield* Effect.promise(() => redis.pttl(`effect-batch:rate:${name}`))
      expect(ttl).toBeGreaterThan(60_000)
      expect(ttl).toBeLessThanOrEqual(120_000)
    }))

  it.live("a batch on two limiters sharing a name keeps to the shared limit", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const scheduled: Array<number> = []
      const limiterFor = () =>
        Effect.map(RedisRateLimiter.make({ redis: connect(), name, limits: { requestsPerSecond: 40, burst: 2 } }), (limiter) => ({
          ...limiter,
          acquire: (cost?: RateLimiter.Cost) =>
            Effect.tap(
              limiter.acquire(cost),
              (r) => Effect.sync(() => scheduled.push(r.scheduledAt))
            )
        }))
      const run = (limiter: RateLimiter.Limiter) =>
        Batch.run(Array.from({ length: 12 }, (_, i) => i), (i) => Effect.succeed(i), { concurrency: 4 }).pipe(
          Effect.provideService(RateLimiter.RateLimiter, limiter)
        )
      const [one, two] = yield* Effect.all([Effect.flatMap(limiterFor(), run), Effect.flatMap(limiterFor(), run)], {
        concurrency: "unbounded"
      })
      expect([one.report.succeeded, two.report.succeeded]).toEqual([12, 12])
      expect(scheduled).toHaveLength(24)
      expect(worstExcess(scheduled, 40, 2)).toBeLessThanOrEqual(1e-3)
    }))

  it.live("layer: a client of its own, made for the batch and closed with it", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const { report } = yield* Batch.run([1, 2, 3], (i) => Effect.succeed(i)).pipe(
        Effect.provide(RedisRateLimiter.layer({ url: url!, name, limits: { requestsPerSecond: 100 } }))
      )
      expect(report.succeeded).toBe(3)
      const redis = connect()
      expect(yield* Effect.promise(() => redis.hget(`effect-batch:rate:${name}`, "requests/1000"))).not.toBeNull()
    }))

  it.live("without a request limit, a 429 teaches one pace to every process: half the starts before it, then 0.7 of it", () =>
    Effect.gen(function*() {
      const name = uniqueName()
      const a = yield* RedisRateLimiter.make({ redis: connect(), name, limits: {} })
      const b = yield* RedisRateLimiter.make({ redis: connect(), name, limits: { tokensPerMinute: 1_000_000 } })
      expect(yield* a.pace).toBeUndefined()
      // 20 starts from the two at once, unpaced (nothing learned yet), then a 429 seen by a.
      const both = (n: number) => [...Array.from({ length: n }, () => a.acquire()), ...Array.from({ length: n }, () => b.acquire())]
      const first = yield* Effect.all(both(10), { concurrency: "unbounded" })
      expect(Math.max(...first.map((r) => r.scheduledAt)) - Math.min(...first.map((r) => r.scheduledAt))).toBeLessThan(500)
      yield* a.closeGate("100 millis")
      // The pace: half the 20 starts of the last second (read at once: it grows a fifth a second).
      const learned = yield* b.pace
      expect(learned).toBeGreaterThanOrEqual(5)
      expect(learned).toBeLessThanOrEqual(10.5)
      // The next starts of both keep to it together, from the gate's reopening on.
      const paced = yield* Effect.all(both(5), { concurrency: "unbounded" })
      const scheduled = paced.map((r) => r.scheduledAt).sort((x, y) => x - y)
      // At most the pace as it grew over those starts (a fifth a second, from at most 10.5/s, for under 2 s).
      expect(worstExcess(scheduled, 10.5 * 1.4, 1)).toBeLessThanOrEqual(1e-3)
      expect(scheduled.at(-1)! - scheduled[0]!).toBeGreaterThanOrEqual((9 * 1000) / (10.5 * 1.4))
      // A second 429, in a later episode (over a second on): 0.7 of the pace it had grown to.
      yield* Effect.sleep("1100 millis")
      const before = (yield* a.pace)!
      yield* b.closeGate("10 millis")
      const cut = (yield* a.pace)!
      expect(cut).toBeGreaterThanOrEqual(before * 0.7 * 0.98)
      expect(cut).toBeLessThanOrEqual(before * 0.7 * 1.05)
      // A 429 of the same episode does not cut again.
      yield* a.closeGate("10 millis")
      expect(yield* b.pace).toBeGreaterThanOrEqual(cut * 0.98)
    }), 20_000)

  it.live("with a request limit, nothing is learned: the limit paces", () =>
    Effect.gen(function*() {
      const limiter = yield* RedisRateLimiter.make({ redis: connect(), name: uniqueName(), limits: { requestsPerSecond: 50 } })
      yield* Effect.all(Array.from({ length: 5 }, () => limiter.acquire()), { concurrency: "unbounded" })
      yield* limiter.closeGate("10 millis")
      expect(yield* limiter.pace).toBeUndefined()
    }))

  it("refuses a bad name and a bad limit, naming what is wrong", () => {
    const redis = connect()
    const badName = Effect.runSyncExit(RedisRateLimiter.make({ redis, name: "has space", limits: { requestsPerSecond: 1 } }))
    expect(String(badName)).toMatch(/name must be 1–200 letters.*has space/)
    const badLimit = Effect.runSyncExit(RedisRateLimiter.make({ redis, name: "x", limits: { requestsPerSecond: -1 } }))
    expect(String(badLimit)).toMatch(/requestsPerSecond must be a finite number > 0, got -1/)
  })

  it.live("a Redis that cannot be reached is a defect naming the limiter and what it was doing", () =>
    Effect.gen(function*() {
      const redis = connect("redis://127.0.0.1:1", { maxRetriesPerRequest: 0, retryStrategy: () => null })
      redis.on("error", () => undefined) // the refused connection, reported again by the failed command
      const limiter = yield* RedisRateLimiter.make({ redis, name: "unreachable", limits: { requestsPerSecond: 1 } })
      const exit = yield* Effect.either(Effect.catchAllDefect(limiter.acquire(), (defect) => Effect.fail(String(defect))))
      expect(Either.isLeft(exit) && exit.left).toMatch(/RedisRateLimiter\(unreachable\): reserve failed/)
    }))
})
