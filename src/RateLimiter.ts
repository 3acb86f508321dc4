/**
 * Admits calls at the rates a provider allows — requests and tokens per window,
 * several limits at once — behind one shared cooldown gate.
 *
 * Each limit is a token bucket in GCRA form ("virtual scheduling"): a limit of
 * `limit` units per `window` with a `burst` admits, in any interval of length
 * `t`, at most `max(burst, largest single cost) + limit × t / window` units.
 * A configured `burst` is kept as it is. Without one, a request limit's burst
 * widens: it starts at 1 (calls spread evenly over the window instead of all
 * firing at its start) and, once the bucket has held back a second's worth of
 * starts, each further one it holds back widens it by a third of a call, up
 * to a second's worth of the limit. Most providers count
 * per-minute limits in a bucket of about a second, full when a batch begins,
 * and the widening spends it (starts run at up to 1.5× the limit until it is
 * gone): a second's worth of the limit sooner, without tuning. A provider
 * counting in shorter windows (100 ms) answers the overflow with a 429 after
 * a call or two: that halves the burst and stops its widening, as does the
 * provider saying little is left (`remaining`, from `x-ratelimit-remaining-*`),
 * which stops it before any 429. Token limits keep a burst of 1. A call's start is
 * reserved on every limit at once, at the earliest moment all of them allow,
 * in arrival order (a large call never starves behind small ones; it goes into
 * debt instead, and the calls after it wait the debt out).
 *
 * Tokens are reserved from an estimate before the call and `settle`d with the
 * actual count after it, moving the bucket by the difference. A `RateLimited`
 * failure closes the gate: no call of any fiber using this limiter starts
 * until the provider's `retryAfter` has passed, and the request buckets restart
 * empty, so the reopening is paced too. Limits can be replaced while calls run.
 *
 * While no request limit is known (none configured, none announced in
 * `x-ratelimit-*` headers), a `RateLimited` failure also teaches the limiter
 * a pace of its own (AIMD on the request rate): otherwise there is nothing
 * to pace the reopening by, every permit holder would start at once, one
 * would get the provider's token and the rest 429 again (a storm that used
 * up items' attempts in ~60 ms). The first 429 sets the pace to half the
 * rate of starts in the second before it; each later 429, at most once a
 * second (one episode), cuts it to 0.7 of itself; between episodes it grows
 * by a fifth of its last value per second. `pace` tells the learned rate.
 * Once a request limit is known, it paces alone: a 429 under a known limit
 * is a window the provider counts differently (a 100 ms bucket), which the
 * gate's restart and the burst's narrowing absorb; halving the pace on it
 * cost 3× the makespan in the peers bench.
 *
 * Why not `@effect/experimental`'s `RateLimiter`: its token bucket's burst is
 * the whole limit (5 200 RPM may start 5 200 calls at once), it cannot refund
 * an over-estimate, and it reserves each key separately, so a start cannot be
 * committed on an RPM and a TPM limit together. The GCRA state here is two
 * numbers per limit, the shape a Redis script can hold when limits must be
 * shared across processes.
 *
 * What it does not promise: only the moment an attempt starts is limited, not
 * how many run at once (that is `ConcurrencyLimiter`'s job), and a reservation
 * whose caller is interrupted is not given back.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * @since 0.1.0
 * @category models
 */
export type Unit = "requests" | "tokens"

/**
 * @since 0.1.0
 * @category models
 */
export interface Limit {
  readonly unit: Unit
  /** Units per window, > 0. */
  readonly limit: number
  readonly window: Duration.DurationInput
  /**
   * Units that may start at once, ≥ 1. Default: for requests, a burst that
   * widens from 1 as the limit is used, up to a second's worth (see the
   * module's header); for tokens, `1` (evenly spaced).
   */
  readonly burst?: number | undefined
}

/**
 * The limits in force. The shorthands and `limits` add up: give
 * `requestsPerMinute` and `tokensPerMinute` together to enforce both.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  readonly requestsPerSecond?: number | undefined
  readonly requestsPerMinute?: number | undefined
  readonly tokensPerSecond?: number | undefined
  readonly tokensPerMinute?: number | undefined
  /** Burst of the shorthand limits, in their units. Default: see `Limit.burst`. */
  readonly burst?: number | undefined
  readonly limits?: ReadonlyArray<Limit> | undefined
}

/**
 * What one call costs. Default: 1 request, 0 tokens.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cost {
  readonly requests?: number | undefined
  readonly tokens?: number | undefined
}

/**
 * A granted start, to `settle` once the actual token count is known.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reservation {
  readonly requests: number
  readonly tokens: number
  /** Time spent waiting for the limits. */
  readonly waitedMillis: number
  /** Time spent waiting for the cooldown gate. */
  readonly gateWaitedMillis: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Limiter {
  /** Waits until the gate is open and every limit admits `cost`, then reserves it. */
  readonly acquire: (cost?: Cost) => Effect.Effect<Reservation>
  /** Reserves `cost` only if it may start right now; `undefined` otherwise (nothing reserved). */
  readonly unsafeTryAcquire: (cost?: Cost) => Reservation | undefined
  /** Corrects a reservation's tokens to what the call really used. */
  readonly settle: (reservation: Reservation, actual: Cost) => Effect.Effect<void>
  /** Closes the gate for `duration` from now (never shortens it); whether it moved. */
  readonly closeGate: (duration: Duration.DurationInput) => Effect.Effect<boolean>
  /** Clock millis at which the gate opens (in the past when open). */
  readonly gateOpensAt: Effect.Effect<number>
  /** Replaces the limits; buckets of limits that stay keep their state. */
  readonly setLimits: (limits: Limits) => Effect.Effect<void>
  readonly limits: Effect.Effect<ReadonlyArray<Limit>>
  /** Requests per second learned from `RateLimited` failures, in force while no request limit is known; else `undefined`. */
  readonly pace: Effect.Effect<number | undefined>
  /**
   * What the provider says is left of its `unit` limit (`x-ratelimit-remaining-*`):
   * a widening burst stops widening once that is under a tenth of a second's worth, plus one.
   */
  readonly remaining: (unit: Unit, remaining: number) => Effect.Effect<void>
  /** The burst of each limit now, in its units, in the order of `limits`. */
  readonly bursts: Effect.Effect<ReadonlyArray<number>>
}

/**
 * The limiter of a batch. Without this layer a batch makes its own unlimited
 * limiter (which still has a cooldown gate).
 *
 * @since 0.1.0
 * @category tags
 */
export class RateLimiter extends Context.Tag("effect-batch/RateLimiter")<RateLimiter, Limiter>() {}

const invalid = (what: string): never => {
  throw new Cause.IllegalArgumentException(`RateLimiter: ${what}`)
}

/**
 * Every limit a `Limits` value describes, validated.
 *
 * @since 0.1.0
 * @category constructors
 */
export const normalize = (limits: Limits): ReadonlyArray<Limit> => {
  const burst = limits.burst
  const out: Array<Limit> = []
  const add = (unit: Unit, limit: number | undefined, window: Duration.DurationInput, name: string) => {
    if (limit === undefined) return
    if (!(limit > 0) || !Number.isFinite(limit)) invalid(`${name} must be a finite number > 0, got ${limit}`)
    out.push(burst === undefined ? { unit, limit, window } : { unit, limit, window, burst })
  }
  add("requests", limits.requestsPerSecond, "1 second", "requestsPerSecond")
  add("requests", limits.requestsPerMinute, "1 minute", "requestsPerMinute")
  add("tokens", limits.tokensPerSecond, "1 second", "tokensPerSecond")
  add("tokens", limits.tokensPerMinute, "1 minute", "tokensPerMinute")
  for (const [i, limit] of (limits.limits ?? []).entries()) {
    if (limit.unit !== "requests" && limit.unit !== "tokens") invalid(`limits[${i}].unit must be "requests" or "tokens"`)
    if (!(limit.limit > 0) || !Number.isFinite(limit.limit)) {
      invalid(`limits[${i}].limit must be a finite number > 0, got ${limit.limit}`)
    }
    out.push(limit)
  }
  for (const [i, limit] of out.entries()) {
    const windowMs = Duration.toMillis(Duration.decode(limit.window))
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) invalid(`limit ${i} (${limit.unit}) needs a finite window > 0`)
    if (limit.burst !== undefined && !(limit.burst >= 1)) invalid(`burst must be ≥ 1, got ${limit.burst}`)
  }
  return out
}

interface Bucket {
  readonly spec: Limit
  readonly key: string
  /** Milliseconds of bucket per unit (the learned pace's changes as it grows). */
  interval: number
  /** Milliseconds of credit the bucket holds when full. */
  burst: number
  /** Theoretical arrival time: when the bucket will be full again. */
  tat: number
  /** A burst that widens with use (a request limit with no `burst` configured); `undefined` when fixed. */
  widening: Widening | undefined
}

interface Widening {
  /** The burst now, in units (`burst / interval`). */
  units: number
  /** The widest it goes: a second's worth of the limit. */
  readonly ceiling: number
  /** Stopped widening (a 429, or the provider said little is left). */
  stopped: boolean
  /** Units of starts the bucket held back so far. */
  heldBack: number
}

/** The learned pace grows by this fraction of its last value per second without a 429. */
const paceGrowth = 0.2
/**
 * What a 429 after the first leaves of the learned pace (as TCP CUBIC's 0.7):
 * halving, as on the first, put the pace at ~0.6× a provider it had passed by
 * a third, and cost 6 % of the makespan in the peers bench.
 */
const paceBackoff = 0.7
/** 429s within this long of a decrease belong to its episode (and the gate's duration, if longer). */
const episodeMillis = 1000
/** Requests per second the learned pace never goes below (3 a minute). */
const minPace = 0.05

/**
 * The learned pace's constants, for limiters that keep it elsewhere
 * (`RedisRateLimiter`): growth per second, the cut of a later 429, how long
 * an episode of 429s lasts, the floor.
 *
 * @since 0.1.0
 * @category internal
 */
export const learnedPace = { growth: paceGrowth, backoff: paceBackoff, episodeMillis, min: minPace } as const
/**
 * Units a widening burst gains per start its bucket held back: with `w` per
 * start, starts run at `1 / (1 - w)` × the limit, so a third makes 1.5×.
 */
const widenPerStart = 1 / 3
/** A widening burst stops once the provider says less than this fraction of its ceiling (+ 1 call) is left. */
const lowRemaining = 0.1

const bucketKey = (limit: Limit) => `${limit.unit}/${Duration.toMillis(Duration.decode(limit.window))}`

const costOf = (bucket: Bucket, requests: number, tokens: number) =>
  bucket.spec.unit === "requests" ? requests : tokens

/**
 * A limiter enforcing `limits` (none: unlimited, gate only).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (limits: Limits = {}): Effect.Effect<Limiter> =>
  Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = () => clock.unsafeCurrentTimeMillis()
      let buckets: Array<Bucket> = []
      let gateOpensAt = Number.NEGATIVE_INFINITY

      // The learned pace: a requests bucket of its own (burst 1), from the first 429 on.
      let learned: Bucket | undefined
      /** Requests per second at the last decrease, and when it was. */
      let paceAtDecrease = 0
      let decreasedAt = Number.NEGATIVE_INFINITY
      /** What every start is reserved on: the limits' buckets, and the learned one while no request limit is known. */
      let paced: Array<Bucket> = buckets
      const knowsRequestLimit = () => buckets.some((bucket) => bucket.spec.unit === "requests")
      const repace = () => {
        paced = learned === undefined || knowsRequestLimit() ? buckets : [...buckets, learned]
      }
      const paceAt = (at: number) => paceAtDecrease * (1 + (paceGrowth * Math.max(0, at - decreasedAt)) / 1000)
      /** Lets the learned pace grow to what it is at `at` (lazily: once per reservation). */
      const grow = (at: number) => {
        if (learned === undefined) return
        const interval = 1000 / paceAt(at)
        // Reservations ahead drain at the new pace (debt kept in starts, as when limits are replaced): else every
        // start reserved before the pace grew holds the next ones to the older, slower pace, and the more permit
        // holders wait (an adaptive limit's 38 against 20), the longer the pace trails (measured: 1.09× against
        // 1.02× the bound in the peers bench's storm case).
        if (learned.interval > 0 && learned.tat > at) learned.tat = at + (learned.tat - at) * (interval / learned.interval)
        learned.interval = interval
        learned.burst = interval
      }
      // Starts counted in whole-second slots: the rate the first 429 cuts.
      let slot = 0
      let slotStarts = 0
      let previousSlotStarts = 0
      /** Moves the slots on to the second of `at`. */
      const roll = (at: number) => {
        const current = Math.floor(at / 1000)
        if (current === slot) return
        previousSlotStarts = current === slot + 1 ? slotStarts : 0
        slotStarts = 0
        slot = current
      }
      const started = (at: number) => {
        roll(at)
        slotStarts++
      }
      /** Starts in the last second: this second's, and the part of the previous one's still inside it. */
      const recentRate = (at: number) => {
        roll(at)
        return slotStarts + previousSlotStarts * (1 - (at % 1000) / 1000)
      }

      const install = (specs: ReadonlyArray<Limit>) => {
        const previous = new Map(buckets.map((b) => [b.key, b]))
        const at = now()
        buckets = specs.map((spec) => {
          const windowMs = Duration.toMillis(Duration.decode(spec.window))
          const interval = windowMs / spec.limit
          const key = bucketKey(spec)
          const kept = previous.get(key)
          // Outstanding debt is kept in units, so it drains at the new rate.
          const tat = kept === undefined ? at : at + Math.max(0, kept.tat - at) * (interval / kept.interval)
          let widening: Widening | undefined
          if (spec.burst === undefined && spec.unit === "requests") {
            const ceiling = Math.max(1, (spec.limit * 1000) / windowMs)
            // A replaced limit keeps how far its burst widened, and whether it stopped.
            widening = kept?.widening === undefined
              ? { units: 1, ceiling, stopped: false, heldBack: 0 }
              : { ...kept.widening, units: Math.min(ceiling, kept.widening.units), ceiling }
          }
          return { spec, key, interval, burst: (widening?.units ?? spec.burst ?? 1) * interval, tat, widening }
        })
        repace()
      }
      install(normalize(limits))

      /** The earliest start at or after `at` that every bucket allows for this cost. */
      const earliestStart = (at: number, requests: number, tokens: number): number => {
        grow(at)
        let start = at
        for (const bucket of paced) {
          const cost = costOf(bucket, requests, tokens) * bucket.interval
          // A cost larger than the burst waits for a full bucket and then goes into debt.
          const earliest = bucket.tat - Math.max(0, bucket.burst - cost)
          if (earliest > start) start = earliest
        }
        return start
      }

      /** Reserves `cost` on every bucket at the earliest start they all allow; returns that start. */
      const reserve = (at: number, requests: number, tokens: number): number => {
        const start = earliestStart(at, requests, tokens)
        for (const bucket of paced) {
          const cost = costOf(bucket, requests, tokens)
          const widening = bucket.widening
          // Held back: the limit, not the demand, set this start. The first second's worth only counts: by then a
          // provider that reports what is left of its limit has said whether it holds more than that.
          if (widening !== undefined && !widening.stopped && bucket.tat - (bucket.burst - cost * bucket.interval) > at) {
            if (widening.heldBack >= widening.ceiling) {
              widening.units = Math.min(widening.ceiling, widening.units + widenPerStart * cost)
              bucket.burst = widening.units * bucket.interval
            }
            widening.heldBack += cost
          }
          bucket.tat = Math.max(bucket.tat, start) + cost * bucket.interval
        }
        started(start)
        return start
      }

      const free: Reservation = { requests: 1, tokens: 0, waitedMillis: 0, gateWaitedMillis: 0 }
      const unsafeTryAcquire = (cost?: Cost): Reservation | undefined => {
        const at = now()
        if (gateOpensAt > at) return undefined
        if (cost === undefined && paced.length === 0) {
          started(at)
          return free
        }
        const requests = cost?.requests ?? 1
        const tokens = cost?.tokens ?? 0
        if (earliestStart(at, requests, tokens) > at) return undefined
        reserve(at, requests, tokens)
        return { requests, tokens, waitedMillis: 0, gateWaitedMillis: 0 }
      }

      const acquire = (cost?: Cost): Effect.Effect<Reservation> =>
        Effect.suspend(() => {
          const requests = cost?.requests ?? 1
          const tokens = cost?.tokens ?? 0
          if (paced.length === 0 && gateOpensAt <= now()) {
            started(now())
            return Effect.succeed({ requests, tokens, waitedMillis: 0, gateWaitedMillis: 0 })
          }
          return Effect.gen(function*() {
            let gateWaited = 0
            let waited = 0
            let reserved = false
            while (true) {
              const at = now()
              if (gateOpensAt > at) {
                yield* Effect.sleep(Duration.millis(gateOpensAt - at))
                gateWaited += now() - at
                continue
              }
              if (reserved) break
              reserved = true
              const start = reserve(at, requests, tokens)
              if (start > at) {
                yield* Effect.sleep(Duration.millis(start - at))
                waited += now() - at
              }
            }
            return { requests, tokens, waitedMillis: waited, gateWaitedMillis: gateWaited }
          })
        })

      const settle = (reservation: Reservation, actual: Cost) =>
        Effect.sync(() => {
          const deltaRequests = (actual.requests ?? reservation.requests) - reservation.requests
          const deltaTokens = (actual.tokens ?? reservation.tokens) - reservation.tokens
          if (deltaRequests === 0 && deltaTokens === 0) return
          for (const bucket of paced) {
            bucket.tat += costOf(bucket, deltaRequests, deltaTokens) * bucket.interval
          }
        })

      let narrowedAt = Number.NEGATIVE_INFINITY
      /** A 429 under a known request limit: widened bursts halve and stop widening, once per episode. */
      const narrow = (at: number, durationMs: number) => {
        if (at - narrowedAt < Math.max(episodeMillis, durationMs)) return
        narrowedAt = at
        for (const bucket of buckets) {
          if (bucket.widening === undefined) continue
          bucket.widening.units = Math.max(1, Math.floor(bucket.widening.units / 2))
          bucket.widening.stopped = true
          bucket.burst = bucket.widening.units * bucket.interval
        }
      }

      /**
       * A 429 slows the pace, once per episode (the 429s of calls already in flight are the same episode): the
       * first to half the rate of starts before it (a burst into the provider's initial bucket), later ones to
       * `paceBackoff` of the pace, which has grown past the provider's rate by less than that.
       */
      const slowDown = (at: number, durationMs: number) => {
        if (knowsRequestLimit()) return narrow(at, durationMs)
        if (at - decreasedAt < Math.max(episodeMillis, durationMs)) return
        const recent = recentRate(at)
        // Before any start (none counted), 1 a second: the pace then grows from half of that.
        paceAtDecrease = learned === undefined
          ? Math.max(minPace, (recent > 0 ? recent : 2) * 0.5)
          : Math.max(minPace, paceAt(at) * paceBackoff)
        decreasedAt = at
        if (learned === undefined) {
          learned = { spec: { unit: "requests", limit: paceAtDecrease, window: "1 second" }, key: "learned", interval: 0, burst: 0, tat: at, widening: undefined }
          repace()
        }
        grow(at)
      }

      const closeGate = (duration: Duration.DurationInput) =>
        Effect.sync(() => {
          const at = now()
          const durationMs = Duration.toMillis(Duration.decode(duration))
          slowDown(at, durationMs)
          const until = at + durationMs
          if (until <= gateOpensAt) return false
          gateOpensAt = until
          for (const bucket of paced) {
            // Restart empty: one call may start at `until`, the rest are paced from there.
            if (bucket.spec.unit === "requests") bucket.tat = Math.max(bucket.tat, until + bucket.burst - bucket.interval)
          }
          return true
        })

      return {
        acquire,
        unsafeTryAcquire,
        settle,
        closeGate,
        gateOpensAt: Effect.sync(() => gateOpensAt),
        setLimits: (next: Limits) => Effect.sync(() => install(normalize(next))),
        limits: Effect.sync(() => buckets.map((b) => b.spec)),
        pace: Effect.sync(() => (learned === undefined || knowsRequestLimit() ? undefined : paceAt(now()))),
        remaining: (unit: Unit, remaining: number) =>
          Effect.sync(() => {
            for (const bucket of buckets) {
              const widening = bucket.widening
              if (bucket.spec.unit === unit && widening !== undefined && remaining < lowRemaining * widening.ceiling + 1) {
                widening.stopped = true
              }
            }
          }),
        bursts: Effect.sync(() => buckets.map((bucket) => bucket.burst / bucket.interval))
      }
    })
  )

/**
 * Tightens `limiter` to per-minute limits a provider announced (e.g. in
 * `x-ratelimit-limit-requests` / `-tokens`): a limit of that unit per minute
 * is added when there is none, lowered when the provider's is lower, and
 * never raised, so a limit you configured stays an upper bound. Whether the
 * limits changed. Cheap when nothing changes; call it on every response.
 *
 * @since 0.1.0
 * @category learning
 */
export const learn = (
  limiter: Limiter,
  announced: { readonly requestsPerMinute?: number | undefined, readonly tokensPerMinute?: number | undefined }
): Effect.Effect<boolean> =>
  Effect.flatMap(limiter.limits, (current) => {
    const next = [...current]
    let changed = false
    const tighten = (unit: Unit, perMinute: number | undefined) => {
      if (perMinute === undefined || !(perMinute > 0) || !Number.isFinite(perMinute)) return
      const i = next.findIndex((limit) => limit.unit === unit && Duration.toMillis(Duration.decode(limit.window)) === 60_000)
      if (i === -1) next.push({ unit, limit: perMinute, window: "1 minute" })
      else if (next[i]!.limit > perMinute) next[i] = { ...next[i]!, limit: perMinute }
      else return
      changed = true
    }
    tighten("requests", announced.requestsPerMinute)
    tighten("tokens", announced.tokensPerMinute)
    return changed ? Effect.as(limiter.setLimits({ limits: next }), true) : Effect.succeed(false)
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (limits: Limits): Layer.Layer<RateLimiter> => Layer.effect(RateLimiter, make(limits))

/**
 * A limiter with no limits: it only holds the cooldown gate.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerUnlimited: Layer.Layer<RateLimiter> = Layer.effect(RateLimiter, make())
