/**
 * A `ConcurrencyLimiter.Limiter` whose limit holds across processes: the
 * calls in flight at a provider, summed over every process sharing the
 * limiter's name, never exceed `limit`. Each process keeps its own limiter
 * under it (`local`: priorities, an adaptive limit), and every permit it
 * grants also needs a lease from Redis.
 *
 * Leases are counted per process in one Redis hash
 * (`effect-batch:concurrency:<name>`): a field per process (leases held) and
 * its expiry, renewed every third of `leaseTtl` while the process lives. A
 * process that dies stops renewing, and the next process to ask for a lease
 * drops its count once it has expired: a dead runner's leases come back
 * within `leaseTtl` (6 s by default, as the cluster's failover). Every
 * operation is one Lua script on the server's clock.
 *
 * A process asks for as many leases as it has callers waiting, in one
 * round trip, and while some still wait asks again every `pollEvery`
 * (10 ms): a start that waits for another process's release waits up to
 * that much longer than it would on one process. A release is one round
 * trip, sent without waiting for it; one that fails is given back on the
 * next request.
 *
 * What it does not promise: fairness between processes (whoever asks first
 * after a release gets the lease; every process asks at the same pace); a
 * process stalled longer than `leaseTtl` (not dead) has its leases counted
 * as free, and the limit can be exceeded until it next asks. Every process
 * must be given the same `limit`.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import * as LuaScript from "./LuaScript.js"
import { randomBytes } from "node:crypto"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as LimitAlgorithm from "../LimitAlgorithm.js"
import { type Holder, type Ledger, makeLedger, permitProtocol, type PermitProtocol } from "../internal/permitPool.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The Redis client; the caller owns it. */
  readonly redis: Redis
  /** The name every process sharing the limit uses, e.g. the provider profile: the hash is `effect-batch:concurrency:<name>`. */
  readonly name: string
  /** Calls in flight at once, over every process. */
  readonly limit: number
  /** This process's own limiter under the shared limit; default a fixed `limit` (prioritized). */
  readonly local?: ConcurrencyLimiter.Limiter | undefined
  /** How long the leases of a process that stopped renewing them count. Default 6 s. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How often a process with callers waiting asks again. Default 10 ms. */
  readonly pollEvery?: Duration.DurationInput | undefined
}

const clock = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

/**
 * ARGV: holder, want, limit, ttl, lost. Gives back `lost` leases of the
 * holder (releases that failed), drops the counts of holders whose leases
 * expired, grants up to `want` within `limit`, renews the holder. Returns
 * how many were granted.
 */
const acquireScript = LuaScript.make(`${clock}
local holder = ARGV[1] local want = tonumber(ARGV[2]) local limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4]) local lost = tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local expires = {} local held = {}
for i = 1, #all, 2 do
  local field = all[i]
  if string.sub(field, 1, 4) == 'exp:' then expires[string.sub(field, 5)] = tonumber(all[i + 1])
  else held[field] = tonumber(all[i + 1]) end
end
if lost > 0 and held[holder] then
  held[holder] = math.max(0, held[holder] - lost)
  redis.call('HSET', KEYS[1], holder, held[holder])
end
local sum = 0
for h, n in pairs(held) do
  if h ~= holder and (expires[h] or 0) < now then redis.call('HDEL', KEYS[1], h, 'exp:' .. h)
  else sum = sum + n end
end
for h, e in pairs(expires) do
  if h ~= holder and held[h] == nil and e < now then redis.call('HDEL', KEYS[1], 'exp:' .. h) end
end
local granted = math.max(0, math.min(want, limit - sum))
if granted > 0 then redis.call('HINCRBY', KEYS[1], holder, granted) end
redis.call('HSET', KEYS[1], 'exp:' .. holder, tostring(now + ttl))
redis.call('PEXPIRE', KEYS[1], ttl * 2 + 60000)
return granted`)

/** ARGV: holder, n. Gives back `n` leases (never below 0). */
const releaseScript = LuaScript.make(`
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = tonumber(ARGV[2])
if held <= n then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HINCRBY', KEYS[1], ARGV[1], -n) end
return 0`)

/** ARGV: holder, ttl. Renews the holder's leases. */
const renewScript = LuaScript.make(`${clock}
redis.call('HSET', KEYS[1], 'exp:' .. ARGV[1], tostring(now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2 + 60000)
return 0`)

/** ARGV: holder. Gives back every lease of the holder (it is closing). */
const leaveScript = LuaScript.make(`
redis.call('HDEL', KEYS[1], ARGV[1], 'exp:' .. ARGV[1])
return 0`)

interface Waiter {
  readonly holder: Holder
  readonly granted: Deferred.Deferred<void>
}

/**
 * A limiter sharing `limit` with every process that uses `name`; its
 * renewal runs, and its leases are held, until the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<ConcurrencyLimiter.Limiter, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (!Number.isInteger(options.limit) || options.limit < 1) {
      return yield* Effect.dieMessage(`RedisConcurrencyLimiter ${options.name}: limit must be an integer ≥ 1, got ${options.limit}`)
    }
    const { name, redis } = options
    const local = options.local ?? (yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(options.limit)))
    const inner = local[permitProtocol]
    const key = `effect-batch:concurrency:${name}`
    const holderId = `${process.pid}-${randomBytes(6).toString("hex")}`
    const ttlMs = Math.max(300, Math.round(Duration.toMillis(options.leaseTtl ?? Duration.seconds(6))))
    const pollEvery = options.pollEvery ?? Duration.millis(10)

    const run = (what: string, script: LuaScript.LuaScript, args: ReadonlyArray<string | number>) =>
      Effect.tryPromise({
        try: () => LuaScript.run(redis, script, key, args),
        catch: (error) => new Error(`RedisConcurrencyLimiter ${name}: ${what} failed: ${error instanceof Error ? error.message : String(error)}`)
      })

    /** Releases that failed: given back with the next request. */
    let lost = 0
    const giveBack = (n: number): void => {
      if (n <= 0) return
      LuaScript.run(redis, releaseScript, key, [holderId, n]).catch(() => {
        lost += n
      })
    }

    // The callers with a local permit waiting for a lease, first come first served; one fiber asks for them all.
    // Leases are not tied to holders (the engine hands a permit from its worker to the item it runs): this
    // process holds one lease per local permit in use, less those still waiting here.
    const waiting: Array<Waiter> = []
    const wake = yield* Effect.makeLatch(false)
    // The latch is closed synchronously with the check that nobody waits: a fiber switch in between could close
    // it on a waiter that has just opened it, and leave that waiter waiting.
    const closeIfNobodyWaits = () => {
      if (waiting.length === 0) wake.unsafeClose()
      return waiting.length === 0
    }
    const ask = Effect.gen(function*() {
      yield* wake.await
      if (closeIfNobodyWaits()) return
      const correction = lost
      lost = 0
      const granted = Number(yield* run("acquire", acquireScript, [holderId, waiting.length, options.limit, ttlMs, correction]).pipe(
        Effect.tapError(() => Effect.sync(() => lost += correction))
      ))
      const served = waiting.splice(0, granted)
      for (const waiter of served) Deferred.unsafeDone(waiter.granted, Effect.void)
      // More granted than waiting (a waiter left meanwhile): back at once.
      giveBack(granted - served.length)
      if (!closeIfNobodyWaits()) yield* Effect.sleep(pollEvery)
    })
    yield* ask.pipe(
      Effect.catchAllCause((cause) =>
        Effect.zipRight(Effect.logWarning(`RedisConcurrencyLimiter ${name}: asking for leases`, cause), Effect.sleep("200 millis"))),
      Effect.forever,
      Effect.forkScoped
    )
    yield* run("renew", renewScript, [holderId, ttlMs]).pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`RedisConcurrencyLimiter ${name}: renewing leases`, cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(Math.round(ttlMs / 3)))),
      Effect.forkScoped
    )
    yield* Effect.addFinalizer(() => Effect.ignore(run("leave", leaveScript, [holderId])))

    /** Stops waiting for `holder`; whether it was waiting (so it has no lease). */
    const unwait = (holder: Holder): boolean => {
      const at = waiting.findIndex((waiter) => waiter.holder === holder)
      if (at < 0) return false
      waiting.splice(at, 1)
      return true
    }

    /** Waits for a lease for `holder`, which holds a local permit; interrupted, it has none. */
    const lease = (holder: Holder): Effect.Effect<void> =>
      // Queued and watched for interruption in one step: interrupted in between, a waiter would keep its place.
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const waiter: Waiter = { holder, granted: Deferred.unsafeMake<void>(FiberId.none) }
          waiting.push(waiter)
          wake.unsafeOpen()
          return restore(Deferred.await(waiter.granted)).pipe(
            Effect.onInterrupt(() => Effect.sync(() => unwait(holder) || giveBack(1)))
          )
        })
      )

    const take = (holder: Holder): Effect.Effect<void> =>
      holder.holding ? Effect.void : Effect.flatMap(inner.take(holder), () =>
        holder.holding ? Effect.onInterrupt(lease(holder), () => inner.release(holder)) : Effect.void)

    /** What releasing `holder` gives back: its lease, if it holds a permit and is not still waiting for one. */
    const unlease = (holder: Holder): void => {
      if (holder.holding && !unwait(holder)) giveBack(1)
    }

    const protocol: PermitProtocol = {
      take,
      // A lease cannot be had without a round trip: every start takes the waiting path.
      tryTake: () => false,
      release: (holder) => Effect.suspend(() => {
        unlease(holder)
        return inner.release(holder)
      }),
      unsafeRelease: (holder) => {
        unlease(holder)
        inner.unsafeRelease(holder)
      },
      dismissIdle: inner.dismissIdle,
      releaseLedger: (ledger: Ledger) =>
        Effect.suspend(() => {
          const before = inner.inUse()
          let unleased = 0
          for (let i = waiting.length - 1; i >= 0; i--) {
            if (waiting[i]!.holder.ledger === ledger) {
              waiting.splice(i, 1)
              unleased++
            }
          }
          return Effect.map(inner.releaseLedger(ledger), () => giveBack(before - inner.inUse() - unleased))
        }),
      record: inner.record,
      inUse: inner.inUse
    }
    return {
      withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        local.withPermit(Effect.suspend(() => {
          // `local` holds the permit (and samples the call); this holder stands for its lease.
          const holder: Holder = { holding: true, ledger: makeLedger() }
          let leased = false
          return lease(holder).pipe(
            Effect.zipRight(Effect.suspend(() => {
              leased = true
              return effect
            })),
            Effect.ensuring(Effect.sync(() => leased && giveBack(1)))
          )
        })),
      current: local.current,
      changes: local.changes,
      max: local.max,
      adaptive: local.adaptive,
      algorithm: local.algorithm,
      [permitProtocol]: protocol
    } satisfies ConcurrencyLimiter.Limiter
  })
