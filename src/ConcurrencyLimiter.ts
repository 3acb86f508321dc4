/**
 * Enforces a concurrency limit — fixed, or moved by a `LimitAlgorithm` — with
 * one resizable pool of permits.
 *
 * A batch takes one permit per item attempt and gives it back when the
 * attempt ends, so an item waiting to retry holds none. Each finished attempt
 * is a sample; an adaptive limiter feeds it to its algorithm and resizes the
 * pool when the limit moves. A task may add what the provider says it spent
 * (`reportProviderTime`), which a latency-based algorithm prefers to the
 * latency the client measured. Outside a batch, `withPermit` runs any effect
 * under the same limit. The limit lives in a
 * `SubscriptionRef` (a `SynchronizedRef` whose `changes` stream anyone can
 * watch), updated together with the resize.
 *
 * What it does not promise: shrinking the limit interrupts nothing — attempts
 * already running finish, and new ones wait until enough permits come back.
 * Waiters are served in arrival order. The pool is our own rather than
 * Effect's `Semaphore` (same `resize` semantics) because a free `Semaphore`
 * permit costs ≈3.5 µs per take and release, more than everything else an
 * item costs the engine (see `internal/permitPool.ts`). A limiter provided as a layer is shared by every batch that
 * uses it; one made by a batch from its `concurrency` option is its own.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import type * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as SynchronizedRef from "effect/SynchronizedRef"
import { makeLedger, PermitPool, permitProtocol, PrioritizedPermitPool } from "./internal/permitPool.js"
import type { Holder, PermitProtocol } from "./internal/permitPool.js"
import * as LimitAlgorithm from "./LimitAlgorithm.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Limiter {
  /**
   * Runs `effect` holding one permit, waiting for one first (interruptibly).
   * A success is a latency sample for an adaptive limit; a failure is not a
   * sample (this cannot tell an overloaded provider from a bad request: a
   * `Batch` can, and samples its attempts itself).
   */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** The limit now. */
  readonly current: Effect.Effect<number>
  /** The limit now, then every change. */
  readonly changes: Stream.Stream<number>
  /** The highest the limit can go. */
  readonly max: number
  /** Whether the limit moves with what it samples. */
  readonly adaptive: boolean
  /** The algorithm's name: `fixed`, `aimd`, `gradient`, or yours. */
  readonly algorithm: string
  /** The engine's side: permits per item and samples per attempt (internal). */
  readonly [permitProtocol]: PermitProtocol
}

/**
 * The limiter a batch uses when its options give no `concurrency`.
 *
 * @since 0.1.0
 * @category tags
 */
export class ConcurrencyLimiter extends Context.Tag("effect-batch/ConcurrencyLimiter")<
  ConcurrencyLimiter,
  Limiter
>() {}

/**
 * The concurrency of a batch given neither a `concurrency` option nor a
 * `ConcurrencyLimiter` layer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultConcurrency = 16

/**
 * A limiter driven by `algorithm`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <S>(algorithm: LimitAlgorithm.LimitAlgorithm<S>): Effect.Effect<Limiter> =>
  Effect.suspend(() => {
    const pool = new PermitPool(algorithm.limit(algorithm.initial))
    return limiterOn(algorithm, pool, pool.take)
  })

/**
 * The priority a fiber's permit requests wait with on a prioritized limiter
 * (`makePrioritized`); other limiters ignore it. Default 0.
 *
 * @since 0.1.0
 * @category priority
 */
export const CurrentPriority: FiberRef.FiberRef<number> = FiberRef.unsafeMake(0)

/**
 * Runs `effect` (e.g. a whole `Batch.run`) with its permit requests at
 * `priority` on prioritized limiters.
 *
 * @since 0.1.0
 * @category priority
 */
export const withPriority: {
  (priority: number): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(effect: Effect.Effect<A, E, R>, priority: number): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(effect: Effect.Effect<A, E, R>, priority: number) => Effect.locally(effect, CurrentPriority, priority))

/**
 * Where the attempt being sampled keeps what the provider said it spent (see
 * `reportProviderTime`).
 *
 * @since 0.1.0
 * @category internal
 */
export interface AttemptTiming {
  providerMs: number | undefined
}

/**
 * The timing of the attempt this fiber runs, when an adaptive limit samples
 * it; set by the engine and `withPermit` (internal).
 *
 * @since 0.1.0
 * @category internal
 */
export const CurrentAttempt: FiberRef.FiberRef<AttemptTiming | undefined> = FiberRef.unsafeMake<AttemptTiming | undefined>(
  undefined
)

/**
 * Tells the adaptive limit sampling this attempt how long the provider says
 * it spent on it, waiting for a slot included (OpenAI's
 * `openai-processing-ms`; `OpenAiCompat` reports it). Queueing at the
 * provider shows in it and the client's own delays do not, so a
 * latency-based algorithm reads it instead of the latency the client
 * measured, which on a busy machine is mostly the client's. A no-op outside
 * an attempt of a batch (or a `withPermit`) with an adaptive limit.
 *
 * @since 0.1.0
 * @category sampling
 */
export const reportProviderTime = (millis: number): Effect.Effect<void> =>
  Effect.map(FiberRef.get(CurrentAttempt), (timing) => {
    if (timing !== undefined && Number.isFinite(millis) && millis >= 0) timing.providerMs = millis
  })

/**
 * A limiter for several batches at once (jobs sharing one provider) that
 * serves waiting permit requests by their `CurrentPriority`, with aging: a
 * request that has waited `aging` counts as one priority higher, so a busy
 * high-priority batch slows a low-priority one down but never stops it.
 * Free permits are taken at once whatever the priority.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePrioritized = <S>(
  algorithm: LimitAlgorithm.LimitAlgorithm<S>,
  options: { readonly aging?: Duration.DurationInput | undefined } = {}
): Effect.Effect<Limiter> =>
  Effect.flatMap(Effect.clock, (clock) => {
    const agingMs = Math.max(1, Duration.toMillis(options.aging ?? Duration.seconds(2)))
    const pool = new PrioritizedPermitPool(algorithm.limit(algorithm.initial), agingMs, () => clock.unsafeCurrentTimeMillis())
    return limiterOn(algorithm, pool, (holder) =>
      holder.holding ? Effect.void : Effect.flatMap(FiberRef.get(CurrentPriority), (priority) => pool.take(holder, priority)))
  })

const limiterOn = <S>(
  algorithm: LimitAlgorithm.LimitAlgorithm<S>,
  pool: PermitPool | PrioritizedPermitPool,
  take: (holder: Holder) => Effect.Effect<void>
): Effect.Effect<Limiter> =>
  Effect.gen(function*() {
    const initial = algorithm.limit(algorithm.initial)
    const limit = yield* SubscriptionRef.make(initial)
    const adaptive = algorithm.min !== algorithm.max
    let state = algorithm.initial // guarded by the lock of `limit`
    const record = (sample: LimitAlgorithm.Sample): Effect.Effect<number | undefined> =>
      adaptive
        ? SynchronizedRef.modifyEffect(limit, (current) => {
            state = algorithm.update(state, sample)
            const next = algorithm.limit(state)
            return next === current
              ? Effect.succeed([undefined, current] as const)
              : Effect.as(pool.resize(next), [next, next] as const)
          })
        : Effect.succeed(undefined)
    const protocol: PermitProtocol = {
      take,
      tryTake: pool.tryTake,
      enqueue: pool.enqueue,
      release: pool.release,
      unsafeRelease: pool.releaseNow,
      releaseLedger: pool.releaseLedger,
      dismissIdle: pool.dismissIdle,
      record,
      inUse: pool.inUse
    }
    const clock = yield* Effect.clock
    const withPermit = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.suspend(() => {
        const holder: Holder = { holding: false, ledger: makeLedger() }
        return take(holder).pipe(
          Effect.zipRight(Effect.suspend(() => {
            if (!adaptive) return effect
            const startedAt = clock.unsafeCurrentTimeMillis()
            const inFlight = pool.inUse()
            const timing: AttemptTiming = { providerMs: undefined }
            return Effect.tap(Effect.locally(effect, CurrentAttempt, timing), () =>
              record({
                startedAt,
                latencyMs: clock.unsafeCurrentTimeMillis() - startedAt,
                inFlight,
                dropped: false,
                providerMs: timing.providerMs
              }))
          })),
          // Also when interrupted right after the grant: `release` is a no-op for a holder without a permit.
          Effect.ensuring(pool.release(holder))
        )
      })
    return {
      withPermit,
      adaptive,
      current: SubscriptionRef.get(limit),
      changes: limit.changes,
      max: algorithm.max,
      algorithm: algorithm.name,
      [permitProtocol]: protocol
    }
  })

/**
 * A fixed limit of `limit` permits.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeFixed = (limit: number): Effect.Effect<Limiter> => make(LimitAlgorithm.fixed(limit))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerFixed = (limit: number): Layer.Layer<ConcurrencyLimiter> =>
  Layer.effect(ConcurrencyLimiter, makeFixed(limit))

/**
 * A limit that follows `algorithm`; by default `LimitAlgorithm.recommended()`
 * (latency-driven, from 20 up to 128: what the CLI runs with).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAdaptive = <S>(algorithm?: LimitAlgorithm.LimitAlgorithm<S>): Layer.Layer<ConcurrencyLimiter> =>
  Layer.effect(ConcurrencyLimiter, algorithm === undefined ? make(LimitAlgorithm.recommended()) : make(algorithm))

/**
 * One limiter for several batches, serving waiting requests by priority
 * (see `makePrioritized`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPrioritized = <S>(
  algorithm: LimitAlgorithm.LimitAlgorithm<S>,
  options: { readonly aging?: Duration.DurationInput | undefined } = {}
): Layer.Layer<ConcurrencyLimiter> => Layer.effect(ConcurrencyLimiter, makePrioritized(algorithm, options))
