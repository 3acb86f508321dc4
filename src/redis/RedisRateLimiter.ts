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
 * Without a request limit, it learns a pace from the 429s as `RateLimiter`
 * does (the same AIMD: half the rate of starts at the first 429, then 0.7
 * of the pace per later episode, growing a fifth per second between them),
 * and that pace lives in the hash too: one process's 429 slows every
 * process, and their starts together keep to it. Starts are counted in the
 * hash for that, so every start is a round trip even with no limit at all.
 *
 * What it does not promise (yet): a limit's burst is the one configured
 * (default 1), never widened; `unsafeTryAcquire` always
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

const { backoff, episodeMillis, growth, min: minPace } = RateLimiter.learnedPace

/**
 * The learned pace in Lua (fields `pace:*`): `rate` (requests per second at
 * the last cut) and `at` (when), the pace's own bucket (`tat`, and the
 * `interval` it was last reserved at), and the starts counted in
 * whole-second slots (`slot`, `starts`, `previous`). Defines `paceNow(now)`
 * (0: nothing learned) and `roll(at)`.
 */
const paceLua = `
local function paceNow(at)
  local rate = tonumber(redis.call('HGET', KEYS[1], 'pace:rate') or '0')
  if rate <= 0 then return 0 end
  local cutAt = tonumber(redis.call('HGET', KEYS[1], 'pace:at') or '0')
  return rate * (1 + ${growth} * math.max(0, at - cutAt) / 1000)
end
local function roll(at)
  local slot = math.floor(at / 1000)
  local known = tonumber(redis.call('HGET', KEYS[1], 'pace:slot') or '-1')
  if slot > known then
    local previous = 0
    if slot == known + 1 then previous = tonumber(redis.call('HGET', KEYS[1], 'pace:starts') or '0') end
    redis.call('HSET', KEYS[1], 'pace:slot', slot, 'pace:previous', previous, 'pace:starts', 0)
  end
end`

/**
 * ARGV: ttl, learn, requests, n, then per bucket: field, interval, burst,
 * cost. Reserves the earliest start at or after now that the gate, every
 * bucket and (with `learn`, no request limit being known) the learned pace
 * allow; with `learn`, counts the start.
 */
const reserveScript = LuaScript.make(`${clock}${paceLua}
local ttl = tonumber(ARGV[1]) local learn = ARGV[2] == '1' local requests = tonumber(ARGV[3]) local n = tonumber(ARGV[4])
local start = now
local gate = tonumber(redis.call('HGET', KEYS[1], 'gate') or '0')
if gate > start then start = gate end
local tats = {}
for i = 0, n - 1 do
  local b = 5 + i * 4
  local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[b]) or '0')
  local interval = tonumber(ARGV[b + 1]) local burst = tonumber(ARGV[b + 2]) local cost = tonumber(ARGV[b + 3])
  local earliest = tat - math.max(0, burst - cost * interval)
  if earliest > start then start = earliest end
  tats[i] = tat
end
local pace = 0
if learn then pace = paceNow(now) end
local paceTat = 0 local paceInterval = 0
if pace > 0 then
  paceInterval = 1000 / pace
  paceTat = tonumber(redis.call('HGET', KEYS[1], 'pace:tat') or '0')
  -- Starts reserved ahead drain at the pace as it grew (as RateLimiter's own).
  local last = tonumber(redis.call('HGET', KEYS[1], 'pace:interval') or '0')
  if last > 0 and paceTat > now then paceTat = now + (paceTat - now) * (paceInterval / last) end
  local earliest = paceTat - math.max(0, paceInterval - requests * paceInterval)
  if earliest > start then start = earliest end
end
for i = 0, n - 1 do
  local b = 5 + i * 4
  redis.call('HSET', KEYS[1], ARGV[b], tostring(math.max(tats[i], start) + tonumber(ARGV[b + 3]) * tonumber(ARGV[b + 1])))
end
if pace > 0 then
  redis.call('HSET', KEYS[1], 'pace:tat', tostring(math.max(paceTat, start) + requests * paceInterval), 'pace:interval', tostring(paceInterval))
end
if learn then
  roll(start)
  redis.call('HINCRBY', KEYS[1], 'pace:starts', 1)
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
 * ARGV: ttl, duration, learn, n, then per request bucket: field, interval,
 * burst. With `learn` (no request limit known), a 429 first slows the
 * learned pace, once per episode: the first to half the rate of starts
 * before it, later ones to `learnedPace.backoff` of the pace. Then closes the gate until
 * now + duration (never shortens it); request buckets and the pace restart
 * empty at the reopening. Returns [now, gate, moved].
 */
const closeGateScript = LuaScript.make(`${clock}${paceLua}
local ttl = tonumber(ARGV[1]) local duration = tonumber(ARGV[2]) local learn = ARGV[3] == '1' local n = tonumber(ARGV[4])
local untilAt = now + duration
if learn then
  local cutAt = tonumber(redis.call('HGET', KEYS[1], 'pace:at') or '-1e18')
  if now - cutAt >= math.max(${episodeMillis}, duration) then
    local pace = paceNow(now)
    local cut
    if pace > 0 then cut = math.max(${minPace}, pace * ${backoff})
    else
      roll(now)
      local starts = tonumber(redis.call('HGET', KEYS[1], 'pace:starts') or '0')
      local previous = tonumber(redis.call('HGET', KEYS[1], 'pace:previous') or '0')
      local recent = starts + previous * (1 - (now % 1000) / 1000)
      if recent <= 0 then recent = 2 end
      cut = math.max(${minPace}, recent * 0.5)
      redis.call('HSET', KEYS[1], 'pace:tat', tostring(now))
    end
    local interval = 1000 / cut
    local tat = tonumber(redis.call('HGET', KEYS[1], 'pace:tat') or tostring(now))
    local last = tonumber(redis.call('HGET', KEYS[1], 'pace:interval') or '0')
    if last > 0 and tat > now then tat = now + (tat - now) * (interval / last) end
    redis.call('HSET', KEYS[1], 'pace:rate', tostring(cut), 'pace:at', tostring(now), 'pace:tat', tostring(tat), 'pace:interval', tostring(interval))
  end
end
local gate = tonumber(redis.call('HGET', KEYS[1], 'gate') or '0')
if untilAt <= gate then
  redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(ttl, gate - now + ttl)))
  return { tostring(now), tostring(gate), '0' }
end
redis.call('HSET', KEYS[1], 'gate', tostring(untilAt))
for i = 0, n - 1 do
  local field = ARGV[5 + i * 3]
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local restart = untilAt + tonumber(ARGV[7 + i * 3]) - tonumber(ARGV[6 + i * 3])
  if restart > tat then redis.call('HSET', KEYS[1], field, tostring(restart)) end
end
if learn and paceNow(now) > 0 then
  local tat = tonumber(redis.call('HGET', KEYS[1], 'pace:tat') or '0')
  if untilAt > tat then redis.call('HSET', KEYS[1], 'pace:tat', tostring(untilAt)) end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(untilAt - now + ttl))
return { tostring(now), tostring(untilAt), '1' }`)

/** Returns [now, gate]. */
const gateScript = LuaScript.make(`${clock}
return { tostring(now), redis.call('HGET', KEYS[1], 'gate') or '0' }`)

/** Returns the learned pace now (0: none). */
const paceScript = LuaScript.make(`${clock}${paceLua}
return tostring(paceNow(now))`)

const invalid = (what: string): never => {
  throw new Cause.IllegalArgumentException(`RedisRateLimiter: ${what}`)
}

/** What a set of limits comes to here: the limits, their buckets, and how long the hash outlives its last use. */
interface Installed {
  readonly limits: ReadonlyArray<RateLimiter.Limit>
  readonly specs: ReadonlyArray<Spec>
  readonly ttlMs: number
  /** No request limit: starts are paced by what 429s teach. */
  readonly learn: boolean
}

const install = (given: RateLimiter.Limits): Installed => {
  const normalized = RateLimiter.normalize(given)
  let longest = 0
  const specs = normalized.map((limit) => {
    const windowMs = Duration.toMillis(Duration.decode(limit.window))
    const intervalMs = windowMs / limit.limit
    const burstMs = (limit.burst ?? 1) * intervalMs
    longest = Math.max(longest, windowMs, burstMs)
    return { field: `${limit.unit}/${windowMs}`, unit: limit.unit, intervalMs, burstMs }
  })
  // A minute after the last use, plus the longest a bucket can hold (its window, or its burst if longer).
  return { limits: normalized, specs, ttlMs: 60_000 + longest, learn: !specs.some((spec) => spec.unit === "requests") }
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
        installed.learn ? 1 : 0,
        requests,
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
          installed.learn ? 1 : 0,
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
      pace: Effect.suspend(() =>
        installed.learn
          ? Effect.map(call("read the pace", paceScript, []), (reply) => Number(reply) > 0 ? Number(reply) : undefined)
          : Effect.succeed(undefined)
      ),
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
