/**
 * A `RateLimiter.Limiter` whose state lives in Redis, so that several
 * processes (the job service's runners, or any batches on several machines)
 * share one provider's limits: the sum of their starts keeps to the limits,
 * and a 429 that one of them gets closes the gate for all.
 *
 * The same GCRA as `RateLimiter` (see there): every limit is a bucket of
 * "theoretical arrival time", kept as one field of one Redis hash per shared
 * limiter, and every operation is one Lua script, so a start is reserved on
 * every limit at once, atomically across processes. Times are the Redis
 * server's (`TIME`), never the callers', so the hosts' clocks may disagree.
 * The hash expires a minute after the last use plus its longest window (or
 * gate), so limiters that come and go leave nothing behind (unlike
 * `@effect/experimental`'s Redis store, whose keys never expire). Why our
 * own store rather than that one: it reserves each key apart, so a start
 * cannot be committed on an RPM and a TPM limit together, it cannot give
 * back an over-estimate, and it has no gate.
 *
 * What it does not promise (yet): it needs a request limit — without one,
 * `RateLimiter` learns a pace from the 429s, and that pace is per process
 * here, so it is refused rather than silently unshared; a limit's burst is
 * the one configured (default 1), never widened; `unsafeTryAcquire` always
 * answers `undefined` (it cannot ask Redis synchronously), so every start is
 * a round trip; every process must be given the same limits (they are not
 * stored); a failing Redis is a defect of the batch using the limiter, and
 * a reservation whose caller dies stays reserved.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { Redis } from "ioredis"
import * as LuaScript from "./LuaScript.js"
import * as RateLimiter from "../RateLimiter.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The Redis client; the caller owns it (see `layer` for one made from a URL). */
  readonly redis: Redis
  /**
   * The name every process sharing these limits uses, e.g. the provider
   * profile: the hash is `effect-batch:rate:<name>`.
   */
  readonly name: string
  readonly limits: RateLimiter.Limits
}

/**
 * A granted start, with when it was scheduled on the Redis server's clock
 * (millis), which is what the limits hold to.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reservation extends RateLimiter.Reservation {
  readonly scheduledAt: number
}

/**
 * A `RateLimiter.Limiter` whose grants say when Redis scheduled them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limiter extends RateLimiter.Limiter {
  readonly acquire: (cost?: RateLimiter.Cost) => Effect.Effect<Reservation>
}

interface Spec {
  readonly field: string
  readonly unit: RateLimiter.Unit
  readonly intervalMs: number
  readonly burstMs: number
}

// Every script reads the server's clock; numbers go back as strings (Redis truncates Lua numbers to integers).
const clock = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000"

/**
 * ARGV: ttl, n, then per bucket: field, interval, burst, cost. Reserves the
 * earliest start at or after now that the gate and every bucket allow.
 */
const reserveScript = LuaScript.make(`${clock}
local ttl = tonumber(ARGV[1]) local n = tonumber(ARGV[2])
local start = now
local gate = tonumber(redis.call('HGET', KEYS[1], 'gate') or '0')
if gate > start then start = gate end
local tats = {}
for i = 0, n - 1 do
  local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[3 + i * 4]) or '0')
  local interval = tonumber(ARGV[4 + i * 4]) local burst = tonumber(ARGV[5 + i * 4]) local cost = tonumber(ARGV[6 + i * 4])
  local earliest = tat - math.max(0, burst - cost * interval)
  if earliest > start then start = earliest end
  tats[i] = tat
end
for i = 0, n - 1 do
  local interval = tonumber(ARGV[4 + i * 4]) local cost = tonumber(ARGV[6 + i * 4])
  redis.call('HSET', KEYS[1], ARGV[3 + i * 4], tostring(math.max(tats[i], start) + cost * interval))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(ttl, gate - now + ttl)))
return { tostring(now), tostring(start) }`)

/** ARGV: n, then per bucket: field, delta (millis of bucket). Moves each existing bucket by its delta. */
const settleScript = LuaScript.make(`
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local field = ARGV[2 + i * 2]
  local tat = redis.call('HGET', KEYS[1], field)
  if tat then redis.call('HSET', KEYS[1], field, tostring(tonumber(tat) + tonumber(ARGV[3 + i * 2]))) end
end
return 0`)

/**
 * ARGV: ttl, duration, n, then per request bucket: field, interval, burst.
 * Closes the gate until now + duration (never shortens it); request buckets
 * restart empty at the reopening. Returns [now, gate, moved].
 */
const closeGateScript = LuaScript.make(`${clock}
local ttl = tonumber(ARGV[1]) local untilAt = now + tonumber(ARGV[2]) local n = tonumber(ARGV[3])
local gate = tonumber(redis.call('HGET', KEYS[1], 'gate') or '0')
if untilAt <= gate then return { tostring(now), tostring(gate), '0' } end
redis.call('HSET', KEYS[1], 'gate', tostring(untilAt))
for i = 0, n - 1 do
  local field = ARGV[4 + i * 3]
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local restart = untilAt + tonumber(ARGV[6 + i * 3]) - tonumber(ARGV[5 + i * 3])
  if restart > tat then redis.call('HSET', KEYS[1], field, tostring(restart)) end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(untilAt - now + ttl))
return { tostring(now), tostring(untilAt), '1' }`)

/** Returns [now, gate]. */
const gateScript = LuaScript.make(`${clock}
return { tostring(now), redis.call('HGET', KEYS[1], 'gate') or '0' }`)

const invalid = (what: string): never => {
  throw new Cause.IllegalArgumentException(`RedisRateLimiter: ${what}`)
}

/** What a set of limits comes to here: the limits, their buckets, and how long the hash outlives its last use. */
interface Installed {
  readonly limits: ReadonlyArray<RateLimiter.Limit>
  readonly specs: ReadonlyArray<Spec>
  readonly ttlMs: number
}

const install = (given: RateLimiter.Limits): Installed => {
  const normalized = RateLimiter.normalize(given)
  if (!normalized.some((limit) => limit.unit === "requests")) {
    invalid(
      "a shared limiter needs a request limit (requestsPerSecond, requestsPerMinute or a limits entry of unit \"requests\"): " +
        "without one a pace would be learned from 429s, and that pace is not shared across processes"
    )
  }
  let longest = 0
  const specs = normalized.map((limit) => {
    const windowMs = Duration.toMillis(Duration.decode(limit.window))
    const intervalMs = windowMs / limit.limit
    const burstMs = (limit.burst ?? 1) * intervalMs
    longest = Math.max(longest, windowMs, burstMs)
    return { field: `${limit.unit}/${windowMs}`, unit: limit.unit, intervalMs, burstMs }
  })
  // A minute after the last use, plus the longest a bucket can hold (its window, or its burst if longer).
  return { limits: normalized, specs, ttlMs: 60_000 + longest }
}

const costOf = (spec: Spec, requests: number, tokens: number) => (spec.unit === "requests" ? requests : tokens)

/**
 * A limiter over `options.redis` shared by every process that uses the same
 * `name` (a bad option throws `IllegalArgumentException` naming it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Limiter> =>
  Effect.suspend(() => {
    if (!/^[\w.:-]{1,200}$/.test(options.name)) {
      invalid(`name must be 1–200 letters, digits or _ . : -, got ${JSON.stringify(options.name)}`)
    }
    const key = `effect-batch:rate:${options.name}`
    const redis = options.redis
    let installed = install(options.limits)

    const call = (what: string, script: LuaScript.LuaScript, args: ReadonlyArray<string | number>) =>
      Effect.tryPromise({
        try: () => LuaScript.run(redis, script, key, args),
        catch: (cause) => new Error(`RedisRateLimiter(${options.name}): ${what} failed: ${String(cause)}`, { cause })
      }).pipe(Effect.orDie)
    const numbers = (reply: unknown): ReadonlyArray<number> => (reply as ReadonlyArray<string>).map(Number)

    const reserve = (requests: number, tokens: number) =>
      call("reserve", reserveScript, [
        installed.ttlMs,
        installed.specs.length,
        ...installed.specs.flatMap((spec) => [spec.field, spec.intervalMs, spec.burstMs, costOf(spec, requests, tokens)])
      ]).pipe(Effect.map((reply) => {
        const [now, start] = numbers(reply)
        return { now: now!, start: start! }
      }))

    const gateLeft = Effect.map(call("read the gate", gateScript, []), (reply) => {
      const [now, gate] = numbers(reply)
      return gate! - now!
    })

    const acquire = (cost?: RateLimiter.Cost): Effect.Effect<Reservation> =>
      Effect.gen(function*() {
        const requests = cost?.requests ?? 1
        const tokens = cost?.tokens ?? 0
        const startedAt = yield* Effect.clockWith((c) => c.currentTimeMillis)
        const { now, start } = yield* reserve(requests, tokens)
        let gateWaited = 0
        if (start > now) {
          yield* Effect.sleep(Duration.millis(start - now))
          // Another process may have closed the gate meanwhile: wait for it too, keeping the reservation.
          for (let left = yield* gateLeft; left > 0; left = yield* gateLeft) {
            const before = yield* Effect.clockWith((c) => c.currentTimeMillis)
            yield* Effect.sleep(Duration.millis(left))
            gateWaited += (yield* Effect.clockWith((c) => c.currentTimeMillis)) - before
          }
        }
        const waited = (yield* Effect.clockWith((c) => c.currentTimeMillis)) - startedAt - gateWaited
        return { requests, tokens, waitedMillis: waited, gateWaitedMillis: gateWaited, scheduledAt: start }
      })

    const settle = (reservation: RateLimiter.Reservation, actual: RateLimiter.Cost) =>
      Effect.suspend(() => {
        const deltaRequests = (actual.requests ?? reservation.requests) - reservation.requests
        const deltaTokens = (actual.tokens ?? reservation.tokens) - reservation.tokens
        if (deltaRequests === 0 && deltaTokens === 0) return Effect.void
        const moves = installed.specs.flatMap((spec) => [spec.field, costOf(spec, deltaRequests, deltaTokens) * spec.intervalMs])
        return Effect.asVoid(call("settle", settleScript, [installed.specs.length, ...moves]))
      })

    const closeGate = (duration: Duration.DurationInput) =>
      Effect.suspend(() => {
        const requestSpecs = installed.specs.filter((spec) => spec.unit === "requests")
        return call("close the gate", closeGateScript, [
          installed.ttlMs,
          Duration.toMillis(Duration.decode(duration)),
          requestSpecs.length,
          ...requestSpecs.flatMap((spec) => [spec.field, spec.intervalMs, spec.burstMs])
        ]).pipe(Effect.map((reply) => numbers(reply)[2] === 1))
      })

    const limiter: Limiter = {
      acquire,
      unsafeTryAcquire: () => undefined,
      settle,
      closeGate,
      // On this process's clock: now, plus what the server says is left of the gate.
      gateOpensAt: Effect.flatMap(gateLeft, (left) => Effect.clockWith((c) => Effect.map(c.currentTimeMillis, (now) => now + left))),
      setLimits: (next) =>
        Effect.sync(() => {
          installed = install(next)
        }),
      limits: Effect.sync(() => installed.limits),
      pace: Effect.succeed(undefined),
      remaining: () => Effect.void,
      bursts: Effect.sync(() => installed.specs.map((spec) => spec.burstMs / spec.intervalMs))
    }
    return Effect.succeed(limiter)
  })

/**
 * The batch's `RateLimiter`, shared through Redis at `url`: a client made
 * for the layer and closed with it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Omit<Options, "redis"> & { readonly url: string }): Layer.Layer<RateLimiter.RateLimiter> =>
  Layer.scoped(
    RateLimiter.RateLimiter,
    Effect.gen(function*() {
      const { Redis } = yield* Effect.promise(() => import("ioredis"))
      const redis = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const client = new Redis(options.url, { maxRetriesPerRequest: 3 })
          // Failures surface through the commands, as defects naming the limiter and what it was doing.
          client.on("error", () => undefined)
          return client
        }),
        (client) => Effect.promise(() => client.quit().catch(() => "closed"))
      )
      return yield* make({ redis, name: options.name, limits: options.limits })
    })
  )
