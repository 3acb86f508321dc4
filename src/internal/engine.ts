/**
 * The engine behind `Batch.run`, `Batch.stream` and `Batch.forEach`.
 *
 * Workers (as many as the limiter's maximum) each loop: take a concurrency
 * permit, pull the next item (so the input is read only as permits free up),
 * run it. A worker waiting for a permit is a ticket in the limiter's queue,
 * not a fiber, where the limiter offers tickets (see `worker`). Per attempt
 * the item waits on the rate limiter holding its permit (so starts stay
 * paced), runs, reports a sample to the limiter and gives the permit back.
 * An item that must wait to retry leaves its worker: it goes on in a fiber of
 * its own, sleeping without a permit and taking a new one before its next
 * attempt, while the worker moves on to the next item. Every item settles as
 * exactly one `TaskResult`.
 *
 * Not built on `Stream.mapEffect` (≈100 µs per item with concurrency; see
 * EFFECT-NOTES pitfall 21), and the per-item path is written with plain
 * combinators and mutable counters (fibers interleave only at yields), because
 * every Effect step here is paid a million times in a big batch.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Tracer from "effect/Tracer"
import type { BatchReport, TimeSpent } from "../BatchReport.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as Progress from "../Progress.js"
import * as RateLimiter from "../RateLimiter.js"
import type { Cost, Options } from "../Batch.js"
import * as Budget from "../Budget.js"
import * as Idempotency from "../Idempotency.js"
import * as ResultCache from "../ResultCache.js"
import * as RetryPolicy from "../RetryPolicy.js"
import * as TaskError from "../TaskError.js"
import * as TaskResult from "../TaskResult.js"
import * as Checkpointing from "./checkpointing.js"
import * as MetricsRecorder from "./metricsRecorder.js"
import { Collector } from "./collector.js"
import * as ItemSource from "./itemSource.js"
import { makeLedger, permitProtocol } from "./permitPool.js"
import type { Holder, Ledger } from "./permitPool.js"

/** The engine reads `Batch.Options` (documented there); `bufferSize` is the stream's business. */
export type Config<A, B, E> = Omit<Options<A, B, E>, "bufferSize">

export type Outcome<B, E> = TaskResult.TaskResult<B, E | TaskError.TaskError>

export interface Summary<E> {
  readonly report: BatchReport
  /** In fail-fast mode, the first final failure. */
  readonly failure: Option.Option<E | TaskError.TaskError>
}

/** One admitted item on its way to an outcome. */
interface ItemRun<A, B, E> extends Holder {
  readonly item: A
  readonly index: number
  readonly admittedAt: number
  /** When its worker began waiting for the permit it was admitted with. */
  readonly since: number
  attempts: number
  state: RetryPolicy.State
  /** Still on the worker that admitted it (an item leaves its worker to wait for a retry). */
  onWorker: boolean
  /** Where a success is stored, when the batch has a cache. */
  cacheKey: string | undefined
  /** Set when other items with the same key wait for this one. */
  shared: { readonly key: unknown, readonly deferred: Deferred.Deferred<Outcome<B, E>> } | undefined
  /** With `spans`: the item's span, from its first attempt to its settling. */
  span?: Tracer.Span | undefined
  /** Where its time went (`BatchReport.TimeSpent`), in ms: measured at each wait's ends, summed over attempts. */
  queuedMs: number
  rateLimitMs: number
  gateMs: number
  inFlightMs: number
  backoffMs: number
}

const positiveMillis = (name: string, input: Duration.DurationInput | undefined): number | undefined => {
  if (input === undefined) return undefined
  const ms = Duration.toMillis(Duration.decode(input))
  if (!(ms > 0)) throw new Cause.IllegalArgumentException(`Batch: ${name} must be > 0, got ${Duration.format(input)}`)
  return ms
}

const limiterFor = (concurrency: number | undefined): Effect.Effect<ConcurrencyLimiter.Limiter> => {
  if (concurrency !== undefined) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      return Effect.die(new Cause.IllegalArgumentException(`Batch: concurrency must be an integer ≥ 1, got ${concurrency}`))
    }
    return ConcurrencyLimiter.makeFixed(concurrency)
  }
  return Effect.flatMap(
    Effect.serviceOption(ConcurrencyLimiter.ConcurrencyLimiter),
    Option.match({
      onNone: () => ConcurrencyLimiter.makeFixed(ConcurrencyLimiter.defaultConcurrency),
      onSome: Effect.succeed
    })
  )
}

const budgetLedger: Effect.Effect<Budget.Ledger> = Effect.flatMap(
  Effect.serviceOption(Budget.Budget),
  Option.match({ onNone: () => Budget.make(), onSome: Effect.succeed })
)

const resultCache: Effect.Effect<ResultCache.Store> = Effect.flatMap(
  Effect.serviceOption(ResultCache.ResultCache),
  Option.match({ onNone: () => ResultCache.makeMemory(), onSome: Effect.succeed })
)

/** The cache as the engine uses it: lookups that miss on any error, stores that never fail. */
const cacheFor = <A, B>(options: NonNullable<Config<A, B, unknown>["cache"]>, store: ResultCache.Store) => {
  const schema = options.schema
  const decode = schema === undefined ? (json: unknown) => Effect.succeed(json as B) : Schema.decodeUnknown(schema)
  const encode = schema === undefined ? (value: B) => Effect.succeed<unknown>(value) : Schema.encode(schema)
  return {
    key: options.key,
    lookup: (key: string): Effect.Effect<Option.Option<B>> =>
      store.get(key).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.succeedNone,
          onSome: (json) => Effect.asSome(decode(json))
        })),
        Effect.catchAll((error) => Effect.as(Effect.logWarning("effect-batch: cache lookup failed, treated as a miss", error), Option.none()))
      ),
    store: (key: string, value: B): Effect.Effect<void> =>
      encode(value).pipe(
        Effect.flatMap((json) => store.set(key, json)),
        Effect.catchAll((error) => Effect.logWarning("effect-batch: cache store failed", error))
      )
  }
}

const rateLimiter: Effect.Effect<RateLimiter.Limiter> = Effect.flatMap(
  Effect.serviceOption(RateLimiter.RateLimiter),
  Option.match({ onNone: () => RateLimiter.make(), onSome: Effect.succeed })
)

const defectAsPermanent = (cause: Cause.Cause<unknown>): TaskError.Permanent =>
  new TaskError.Permanent({
    message: Cause.isInterruptedOnly(cause)
      ? "the task interrupted itself"
      : `the task died: ${Cause.pretty(cause).split("\n")[0]}`,
    cause: Cause.squash(cause)
  })

const isDeadline = (error: TaskError.TaskError) => error._tag === "Timeout" && error.scope === "deadline"

/**
 * Reports one settled result. Returning `undefined` means it was handled at
 * once (the common case for `run`), which spares the engine an effect.
 */
export type Emit<B, E> = (result: Outcome<B, E>) => Effect.Effect<void> | undefined

export const run = <A, B, E, R, ES, RS>(
  input: ItemSource.Input<A, ES, RS>,
  task: (item: A, index: number) => Effect.Effect<B, E, R>,
  config: Config<A, B, E>,
  emit: Emit<B, E>,
  failFast: boolean
): Effect.Effect<Summary<E>, ES | Checkpointing.Failure, R | RS> =>
  Effect.scoped(Effect.gen(function*() {
    const timeoutMs = positiveMillis("timeout", config.timeout)
    const deadlineMs = positiveMillis("deadline", config.deadline)
    const limiter = yield* limiterFor(config.concurrency)
    const permits = limiter[permitProtocol]
    const rate = yield* rateLimiter
    const budget = yield* budgetLedger
    const cache = config.cache === undefined ? undefined : cacheFor(config.cache, yield* resultCache)
    const policy = yield* RetryPolicy.RetryPolicy
    const progress = yield* Progress.Progress
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const collector = new Collector(now())
    collector.limit(collector.startedAt, yield* limiter.current)
    const ended: { report?: BatchReport } = {}
    const onReport = config.onReport
    if (onReport !== undefined) {
      // The first finalizer registered runs last: after the fibers are stopped and the checkpoint is written.
      yield* Effect.addFinalizer((exit) =>
        onReport(
          ended.report ?? collector.finish(now()),
          Exit.isSuccess(exit) ? "completed" : Exit.isInterrupted(exit) ? "interrupted" : "failed"
        ))
    }
    // Registered before the fibers' set, so it runs after they are interrupted.
    const ledger: Ledger = makeLedger()
    const metrics = config.metrics === true
      ? MetricsRecorder.make(config.name ?? "default", yield* FiberRef.get(FiberRef.currentMetricLabels))
      : undefined
    if (metrics !== undefined) {
      // The last flush gives back this batch's share of the gauges (attempts cut short never said they ended).
      yield* Effect.addFinalizer(() => Effect.sync(() => metrics.flush(collector, { inFlight: 0, limit: 0 })))
      yield* Effect.forkScoped(Effect.repeat(
        Effect.sync(() => metrics.flush(collector, { inFlight, limit: collector.currentLimit })),
        Schedule.spaced(Duration.seconds(1))
      ))
    }
    yield* Effect.addFinalizer(() => permits.releaseLedger(ledger))
    const source = yield* ItemSource.make(input, config.priority)
    const checkpoint = config.checkpoint === undefined
      ? undefined
      : yield* Checkpointing.make<A, B, E>(config.checkpoint, source.total)
    let checkpointClosed = false
    const closeCheckpoint = (reason: TaskResult.SkipReason | undefined): Effect.Effect<void, Checkpointing.Failure> =>
      checkpoint === undefined || checkpointClosed
        ? Effect.void
        : Effect.suspend(() => {
            checkpointClosed = true
            return checkpoint.close(reason)
          })
    // Registered before the fibers' set: on interruption it runs after they are stopped, writing what they settled
    // (unless the store already failed the run: writing again would only fail again).
    if (checkpoint !== undefined) {
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(Deferred.isDone(checkpoint.failed), (storeFailed) =>
          storeFailed ? Effect.void : Effect.orDie(closeCheckpoint("interrupted"))))
    }
    const fibers = yield* FiberSet.make<void, never>()
    // Tasks see the batch's rate limiter, so an adapter can teach it the limits a provider reports.
    const runFiber = yield* Effect.provideService(FiberSet.runtime(fibers)<R | RS>(), RateLimiter.RateLimiter, rate)
    const halted = yield* Deferred.make<void>()
    const classify = config.classify
      ? (e: E | TaskError.TaskError) => (TaskError.isTaskError(e) ? e : config.classify!(e as E))
      : TaskError.classify
    const inFlightByKey = config.key ? new Map<unknown, Deferred.Deferred<Outcome<B, E>>>() : undefined
    const deadlineError = () =>
      new TaskError.Timeout({ message: `deadline of ${deadlineMs} ms reached`, scope: "deadline" })
    const timeoutError = () =>
      new TaskError.Timeout({ message: `attempt timed out after ${timeoutMs} ms`, after: Duration.millis(timeoutMs!) })

    let stopReason: TaskResult.SkipReason | undefined
    /** The input is used up: workers still waiting for a permit have nothing to pull. */
    let inputDone = false
    let admitted = 0
    const endOfInput = () => {
      if (inputDone) return
      inputDone = true
      permits.dismissIdle(ledger)
    }
    let firstFailure: Option.Option<E | TaskError.TaskError> = Option.none()
    let inFlight = 0
    if (config.stopWhen !== undefined) {
      yield* Effect.forkScoped(Effect.zipRight(
        config.stopWhen,
        Effect.sync(() => {
          stopReason ??= "interrupted"
          permits.dismissIdle(ledger)
        })
      ))
    }

    const progressEvent = (result: Outcome<B, E>, timeSpent: TimeSpent | undefined): Progress.Event =>
      result._tag === "Succeeded"
        ? {
            _tag: "ItemSucceeded",
            index: result.index,
            attempts: result.attempts,
            durationMs: result.durationMs,
            source: result.source,
            timeSpent
          }
        : result._tag === "Failed"
          ? {
              _tag: "ItemFailed",
              index: result.index,
              attempts: result.attempts,
              errorClass: result.errorClass,
              error: result.error,
              timeSpent
            }
          : { _tag: "ItemSkipped", index: result.index, reason: result.reason }

    /**
     * Records and reports a result (with what it cost and where its time went, if it made a call), then goes on
     * with `next`.
     */
    const finish = <X, Y, Z>(
      result: Outcome<B, E>,
      next: Effect.Effect<X, Y, Z>,
      spent?: Cost,
      timeSpent?: TimeSpent
    ): Effect.Effect<X, Y, Z> => {
      collector.result(result)
      let effect: Effect.Effect<X, Y, Z> = next
      if (failFast && result._tag === "Failed" && stopReason === undefined) {
        stopReason = "failFast"
        firstFailure = Option.some(result.error)
        effect = Effect.zipRight(Deferred.succeed(halted, undefined), effect)
      }
      if (checkpoint !== undefined) {
        const recorded = checkpoint.record(result, spent)
        if (recorded !== undefined) effect = Effect.zipRight(recorded, effect)
      }
      const emitted = emit(result)
      if (emitted !== undefined) effect = Effect.zipRight(emitted, effect)
      const observed = config.onResult?.(result)
      if (observed !== undefined) effect = Effect.zipRight(observed, effect)
      return progress.enabled ? Effect.zipRight(progress.emit(progressEvent(result, timeSpent)), effect) : effect
    }

    /** Gives the permit back, reports the outcome (to waiting duplicates too), goes on with `next`. */
    const settle = <X, Y, Z>(
      run: ItemRun<A, B, E>,
      result: Outcome<B, E>,
      next: Effect.Effect<X, Y, Z>,
      spent?: Cost
    ): Effect.Effect<X, Y, Z> => {
      permits.unsafeRelease(run)
      // From the item's admission (as the result says, or now) back to its first wait for a permit.
      const wallMs = (result._tag === "Skipped" ? elapsed(run) : result.durationMs) + run.admittedAt - run.since
      collector.timeSpent(run, wallMs)
      if (metrics !== undefined && result._tag !== "Skipped") metrics.itemDuration(result.durationMs)
      const timeSpent = progress.enabled || run.span !== undefined ? timeSpentOf(run, wallMs) : undefined
      if (run.span !== undefined) endItemSpan(run.span, result, timeSpent!)
      const shared = run.shared
      if (shared === undefined) return finish(result, next, spent, timeSpent)
      inFlightByKey!.delete(shared.key)
      return Effect.zipRight(Deferred.succeed(shared.deferred, result), finish(result, next, spent, timeSpent))
    }

    const timeSpentOf = (run: ItemRun<A, B, E>, wallMs: number): TimeSpent => ({
      queuedMs: run.queuedMs,
      rateLimitMs: run.rateLimitMs,
      gateMs: run.gateMs,
      inFlightMs: run.inFlightMs,
      backoffMs: run.backoffMs,
      wallMs
    })

    const spans = config.spans === true
    const endItemSpan = (span: Tracer.Span, result: Outcome<B, E>, time: TimeSpent) => {
      span.attribute("effect-batch.outcome", result._tag)
      span.attribute("effect-batch.attempts", result.attempts)
      if (result._tag === "Failed") span.attribute("effect-batch.failure_class", result.errorClass)
      if (result._tag === "Skipped") span.attribute("effect-batch.skip_reason", result.reason)
      span.attribute("effect-batch.queued_ms", time.queuedMs)
      span.attribute("effect-batch.rate_limit_ms", time.rateLimitMs)
      span.attribute("effect-batch.gate_ms", time.gateMs)
      span.attribute("effect-batch.in_flight_ms", time.inFlightMs)
      span.attribute("effect-batch.backoff_ms", time.backoffMs)
      span.end(clock.unsafeCurrentTimeNanos(), result._tag === "Failed" ? Exit.fail(result.error) : Exit.void)
    }
    const makeItemSpan = (index: number) => Effect.makeSpan("effect-batch.item", { attributes: { "effect-batch.index": index }, captureStackTrace: false })
    /** The attempt as a child span of the item's (made at its first attempt). */
    const traced = <X, Y, Z>(run: ItemRun<A, B, E>, reservation: RateLimiter.Reservation, effect: Effect.Effect<X, Y, Z>) =>
      Effect.flatMap(run.span === undefined ? makeItemSpan(run.index) : Effect.succeed(run.span), (item) => {
        run.span = item
        return effect.pipe(
          Effect.tapError((error) =>
            Effect.annotateCurrentSpan("effect-batch.failure_class", classify(error as E | TaskError.TaskError)._tag)),
          Effect.withSpan("effect-batch.attempt", {
            parent: item,
            // A stack trace per span is most of its cost (measured: 32 µs an item with, see the README).
            captureStackTrace: false,
            attributes: {
              "effect-batch.index": run.index,
              "effect-batch.attempt": run.attempts,
              "effect-batch.rate_wait_ms": reservation.waitedMillis,
              "effect-batch.gate_wait_ms": reservation.gateWaitedMillis
            }
          })
        )
      })

    const elapsed = (run: ItemRun<A, B, E>) => now() - run.admittedAt
    const remaining = (run: ItemRun<A, B, E>) =>
      deadlineMs === undefined ? Number.POSITIVE_INFINITY : deadlineMs - elapsed(run)
    const failDeadline = <X, Y, Z>(run: ItemRun<A, B, E>, next: Effect.Effect<X, Y, Z>) =>
      settle(run, TaskResult.failed(run.index, deadlineError(), "Timeout", run.attempts, elapsed(run)), next)

    /** Runs `effect` within the item's deadline; `undefined` when the deadline came first. */
    const withinDeadline = <X>(run: ItemRun<A, B, E>, effect: Effect.Effect<X>): Effect.Effect<X | undefined> =>
      deadlineMs === undefined
        ? effect
        : Effect.timeoutTo(effect, {
            duration: Math.max(0, remaining(run)),
            onSuccess: (x): X | undefined => x,
            onTimeout: () => undefined
          })

    const limitMoved = (limit: number | undefined): Effect.Effect<void> => {
      if (limit === undefined) return Effect.void
      collector.limit(now(), limit)
      return progress.enabled ? progress.emit({ _tag: "LimitChanged", limit }) : Effect.void
    }

    const closeGate = (run: ItemRun<A, B, E>, cooldown: Duration.Duration): Effect.Effect<void> =>
      Effect.flatMap(rate.closeGate(cooldown), (moved) => {
        if (!moved) return Effect.void
        collector.gateClosures++
        return progress.enabled
          ? progress.emit({ _tag: "GateClosed", index: run.index, durationMs: Duration.toMillis(cooldown) })
          : Effect.void
      })

    /**
     * One attempt of `run` (which holds a permit), and what follows it; `next`
     * is where its worker goes on once the item has settled or left it.
     */
    const attempt = <X, Y, Z>(run: ItemRun<A, B, E>, next: Effect.Effect<X, Y, Z>): Effect.Effect<X, Y, Z | R> => {
      if (stopReason !== undefined) return settle(run, TaskResult.skipped(run.index, stopReason, run.attempts), next)
      if (deadlineMs !== undefined && remaining(run) <= 0) return failDeadline(run, next)
      const cost = config.estimate?.(run.item, run.index)
      const ready = rate.unsafeTryAcquire(cost)
      if (ready !== undefined) return call(run, cost, ready, next)
      // Measured here rather than taken from the reservation alone, so that a limiter of any kind (Redis too) and a
      // deadline reached while waiting are counted; the reservation says which part of the wait was the gate.
      const waitFrom = now()
      return Effect.flatMap(withinDeadline(run, rate.acquire(cost)), (reservation) => {
        const waited = now() - waitFrom
        if (reservation === undefined) {
          run.rateLimitMs += waited
          return failDeadline(run, next)
        }
        const gate = Math.min(waited, reservation.gateWaitedMillis)
        run.gateMs += gate
        run.rateLimitMs += waited - gate
        collector.rateLimitWaitMs += reservation.waitedMillis
        collector.gateWaitMs += reservation.gateWaitedMillis
        if (stopReason !== undefined) return settle(run, TaskResult.skipped(run.index, stopReason, run.attempts), next)
        return call(run, cost, reservation, next)
      })
    }

    const call = <X, Y, Z>(
      run: ItemRun<A, B, E>,
      cost: Cost | undefined,
      reservation: RateLimiter.Reservation,
      next: Effect.Effect<X, Y, Z>
    ): Effect.Effect<X, Y, Z | R> => {
      const usd = cost?.usd ?? 0
      if (!budget.unsafeReserve(usd)) {
        stopReason ??= "budget"
        collector.budgetExceeded ??= budget.unsafeSnapshot().exceeded
        return settle(run, TaskResult.skipped(run.index, stopReason, run.attempts), next)
      }
      collector.estimatedCost += usd
      collector.estimatedTokens += cost?.tokens ?? 0
      run.attempts++
      collector.attempts++
      let effect = task(run.item, run.index)
      const itemKey = checkpoint?.keyOf(run.index)
      if (itemKey !== undefined) {
        effect = Effect.provideService(effect, Idempotency.CurrentItem, { runId: checkpoint!.runId, itemKey })
      }
      if (timeoutMs !== undefined || deadlineMs !== undefined) {
        const left = remaining(run)
        if (left <= 0) return failDeadline(run, next)
        const byDeadline = left < (timeoutMs ?? Number.POSITIVE_INFINITY)
        effect = Effect.timeoutFail(effect, {
          duration: byDeadline ? left : timeoutMs!,
          onTimeout: byDeadline ? deadlineError : timeoutError
        }) as typeof effect
      }
      if (spans) effect = traced(run, reservation, effect)
      if (progress.enabled) {
        effect = Effect.zipRight(progress.emit({ _tag: "AttemptStarted", index: run.index, attempt: run.attempts }), effect)
      }
      const adaptive = limiter.adaptive
      const startedAt = now()
      const inFlightAtStart = ++inFlight
      // What the provider says it spent, if the task reports it (`ConcurrencyLimiter.reportProviderTime`).
      const timing: ConcurrencyLimiter.AttemptTiming | undefined = adaptive ? { providerMs: undefined } : undefined
      // Set, not `Effect.locally`: attempts run on the engine's own fibers, each setting its own before its task.
      // Measured on 200 000 no-op items with the recommended adaptive limit: 6.0 µs an item before, 9.0 with
      // `locally`, 7.0 with this.
      if (timing !== undefined) effect = Effect.zipRight(FiberRef.set(ConcurrencyLimiter.CurrentAttempt, timing), effect)
      const sample = (dropped: boolean) =>
        Effect.flatMap(
          permits.record({
            startedAt,
            latencyMs: now() - startedAt,
            inFlight: inFlightAtStart,
            dropped,
            providerMs: timing?.providerMs
          }),
          limitMoved
        )
      return Effect.matchCauseEffect(effect, {
        onSuccess: (value) => {
          inFlight--
          const endedAt = now()
          run.inFlightMs += endedAt - startedAt
          metrics?.attemptDuration(endedAt - startedAt)
          const actual = config.settle?.(value, run.item, run.index) ?? cost
          const actualUsd = actual?.usd ?? usd
          budget.unsafeSettle(usd, actualUsd)
          collector.actualCost += actualUsd
          collector.actualTokens += actual?.tokens ?? 0
          const spent = actual === undefined ? undefined : { ...actual, usd: actualUsd }
          let settled = settle(run, TaskResult.succeeded(run.index, value, run.attempts, endedAt - run.admittedAt), next, spent)
          if (config.settle) settled = Effect.zipRight(rate.settle(reservation, actual!), settled)
          if (run.cacheKey !== undefined) settled = Effect.zipRight(cache!.store(run.cacheKey, value), settled)
          return adaptive ? Effect.zipRight(sample(false), settled) : settled
        },
        onFailure: (cause) => {
          inFlight--
          const ranMs = now() - startedAt
          run.inFlightMs += ranMs
          metrics?.attemptDuration(ranMs)
          permits.unsafeRelease(run)
          budget.unsafeRelease(usd)
          const failure = Cause.failureOption(cause)
          const error: E | TaskError.TaskError = Option.isSome(failure) ? failure.value : defectAsPermanent(cause)
          const classified = classify(error)
          collector.attemptFailures[classified._tag]++
          const after = failed(run, error, classified, next)
          // A rejected request (400, no quota) says nothing about capacity: answered at once, it would pass for
          // an unloaded round trip and pull a latency-based limit down to its floor.
          const informative = classified._tag !== "Permanent" && classified._tag !== "QuotaExhausted"
          return adaptive && informative ? Effect.zipRight(sample(TaskError.isDrop(classified._tag)), after) : after
        }
      })
    }

    /** After a failed attempt (permit already given back): retry, or settle as final. */
    const failed = <X, Y, Z>(
      run: ItemRun<A, B, E>,
      error: E | TaskError.TaskError,
      classified: TaskError.TaskError,
      next: Effect.Effect<X, Y, Z>
    ): Effect.Effect<X, Y, Z | R> => {
      const errorClass = classified._tag
      if (errorClass === "QuotaExhausted") stopReason ??= "quota"
      return Effect.flatMap(RetryPolicy.step(policy, run.state, classified, now()), (decision) => {
        const gate = errorClass === "RateLimited"
          ? closeGate(run, TaskError.retryAfter(classified) ?? Duration.millis(decision?.delayMillis ?? 1000))
          : Effect.void
        if (decision === undefined || isDeadline(classified)) {
          const result = TaskResult.failed(run.index, error, errorClass, run.attempts, elapsed(run))
          return Effect.zipRight(gate, settle(run, result, next))
        }
        if (decision.delayMillis >= remaining(run)) return Effect.zipRight(gate, failDeadline(run, next))
        if (stopReason !== undefined) {
          return Effect.zipRight(gate, settle(run, TaskResult.skipped(run.index, stopReason, run.attempts), next))
        }
        collector.retry(errorClass)
        run.span?.event("retry", clock.unsafeCurrentTimeNanos(), {
          "effect-batch.failure_class": errorClass,
          "effect-batch.delay_ms": decision.delayMillis
        })
        run.state = decision.state
        const announced = progress.enabled
          ? Effect.zipRight(
              progress.emit({
                _tag: "Retrying",
                index: run.index,
                attempt: run.attempts,
                errorClass,
                delayMs: decision.delayMillis
              }),
              gate
            )
          : gate
        const retry = <X2, Y2, Z2>(then: Effect.Effect<X2, Y2, Z2>) =>
          Effect.suspend(() => {
            const backoffFrom = now()
            return Effect.zipRight(
              decision.delayMillis > 0 ? Effect.sleep(Duration.millis(decision.delayMillis)) : Effect.void,
              Effect.suspend(() => {
                const queuedFrom = now()
                run.backoffMs += queuedFrom - backoffFrom
                return Effect.flatMap(withinDeadline(run, Effect.as(permits.take(run), true)), (taken) => {
                  run.queuedMs += now() - queuedFrom
                  return taken === undefined ? failDeadline(run, then) : attempt(run, then)
                })
              })
            )
          })
        if (!run.onWorker) return Effect.zipRight(announced, retry(next))
        // Leave the worker: it goes on with the next item while this one waits.
        run.onWorker = false
        return Effect.zipRight(announced, Effect.suspend(() => {
          runFiber(retry(Effect.void))
          return next
        }))
      })
    }

    /** Starts an admitted item (holding the permit its worker took); its worker goes on with `next`. */
    const admit = <X, Y, Z>(run: ItemRun<A, B, E>, next: Effect.Effect<X, Y, Z>): Effect.Effect<X, Y, Z | R> => {
      if (cache === undefined) return dedupe(run, next)
      const key = cache.key(run.item, run.index)
      return Effect.flatMap(cache.lookup(key), (hit) => {
        if (Option.isSome(hit)) {
          permits.unsafeRelease(run)
          return finish(TaskResult.succeeded(run.index, hit.value, 0, elapsed(run), "cache"), next)
        }
        run.cacheKey = key
        return dedupe(run, next)
      })
    }

    /** Lets one item per `key` in flight make the call; the others wait for its outcome. */
    const dedupe = <X, Y, Z>(run: ItemRun<A, B, E>, next: Effect.Effect<X, Y, Z>): Effect.Effect<X, Y, Z | R> => {
      if (inFlightByKey === undefined) return attempt(run, next)
      const key = config.key!(run.item, run.index)
      const leader = inFlightByKey.get(key)
      if (leader === undefined) {
        const deferred = Deferred.unsafeMake<Outcome<B, E>>(FiberId.none)
        inFlightByKey.set(key, deferred)
        run.shared = { key, deferred }
        return attempt(run, next)
      }
      // A duplicate needs no permit: it waits for its leader's outcome, off the worker.
      permits.unsafeRelease(run)
      runFiber(Effect.flatMap(withinDeadline(run, Deferred.await(leader)), (outcome) =>
        finish(
          outcome === undefined
            ? TaskResult.failed(run.index, deadlineError(), "Timeout", 0, elapsed(run))
            : outcome._tag === "Succeeded"
              ? TaskResult.succeeded(run.index, outcome.value, 0, elapsed(run), "shared")
              : outcome._tag === "Failed"
                ? TaskResult.failed(run.index, outcome.error, outcome.errorClass, 0, elapsed(run))
                : TaskResult.skipped(run.index, outcome.reason),
          Effect.void
        )))
      return next
    }

    const start = (
      holder: Holder,
      next: ItemSource.Admitted<A> | undefined,
      queuedMs: number
    ): Effect.Effect<void, ES | Checkpointing.Failure, R | RS> => {
      if (next === undefined) {
        permits.unsafeRelease(holder)
        endOfInput()
        return Effect.void
      }
      // With a known total, the last item admitted ends the input: no worker need wait for a permit to find out.
      if (++admitted === source.total) endOfInput()
      if (stopReason !== undefined) {
        permits.unsafeRelease(holder)
        return finish(TaskResult.skipped(next.index, stopReason), Effect.void)
      }
      if (checkpoint !== undefined) {
        let restored: Outcome<B, E> | Checkpointing.Failure | undefined
        try {
          restored = checkpoint.restore(next.index, next.item)
        } catch (error) {
          // An item that is not JSON has no key: a defect, as `CheckpointStore.itemKeyOf` says.
          permits.unsafeRelease(holder)
          return Effect.die(error)
        }
        if (restored !== undefined) {
          permits.unsafeRelease(holder)
          if (restored._tag === "CheckpointMismatch" || restored._tag === "CheckpointError") return Effect.fail(restored)
          return finish(restored, worker)
        }
      }
      // Hand the permit over from the worker's holder to the item.
      holder.holding = false
      const admittedAt = now()
      const run: ItemRun<A, B, E> = {
        item: next.item,
        index: next.index,
        admittedAt,
        since: admittedAt - queuedMs,
        attempts: 0,
        state: RetryPolicy.initial(policy),
        onWorker: true,
        cacheKey: undefined,
        shared: undefined,
        holding: true,
        ledger,
        queuedMs,
        rateLimitMs: 0,
        gateMs: 0,
        inFlightMs: 0,
        backoffMs: 0
      }
      return admit(run, worker)
    }

    /** Pulls the next item for the permit `holder` took after waiting `queuedMs` for it. */
    const pull = (holder: Holder, queuedMs: number): Effect.Effect<void, ES | Checkpointing.Failure, R | RS> => {
      const next = source.unsafeTryNext()
      if (next !== ItemSource.notReady) return start(holder, next, queuedMs)
      return Effect.flatMap(
        Effect.onError(source.next, () => permits.release(holder)),
        (admitted) => start(holder, admitted, queuedMs)
      )
    }

    /**
     * The workers are forked on the batch's fiber set rather than by `Effect.all`: a batch smaller than its limit (the
     * job service's chunks) has a worker per item, and `Effect.all` costs each child a fork and a join of every
     * fiber ref (≈35 µs on effect 3.22.4, against ≈3 µs for a fork from a runtime). `working` counts them and their
     * tickets (see `worker`); `workersDone` completes when it falls to 0, or fails with the first worker that fails,
     * as `Effect.all` did.
     */
    const workersDone = Deferred.unsafeMake<void, ES | Checkpointing.Failure>(FiberId.none)
    let working = 0
    /** The workers were stopped (halted): a ticket granted from now on gives its permit back. */
    let workersStopped = false
    const workerFailed = (cause: Cause.Cause<ES | Checkpointing.Failure>) =>
      Effect.sync(() => Deferred.unsafeDone(workersDone, Exit.failCause(cause)))
    const workerGone = () => {
      if (--working === 0) Deferred.unsafeDone(workersDone, Exit.void)
    }
    const workerEnded = (exit: Exit.Exit<void>) => {
      if (Exit.isFailure(exit)) Deferred.unsafeDone(workersDone, exit) // interrupted
      else workerGone()
    }
    const spawn = (effect: Effect.Effect<void, ES | Checkpointing.Failure, R | RS>, immediate: boolean) => {
      working++
      runFiber(Effect.catchAllCause(effect, workerFailed), { immediate }).addObserver(workerEnded)
    }
    const enqueue = permits.enqueue
    const priority = yield* FiberRef.get(ConcurrencyLimiter.CurrentPriority)
    /** A worker's holder before it takes a permit; `undefined` once the batch has nothing more to start. */
    const idleHolder = (): Holder | undefined =>
      stopReason !== undefined || inputDone ? undefined : { holding: false, ledger, idle: true }
    /** Waits for a permit for `holder` as a ticket: granted, it starts a worker with it. */
    const queueTicket = (holder: Holder) => {
      working++
      const queuedFrom = now()
      enqueue!(holder, priority, (granted) => {
        if (granted) {
          if (workersStopped) permits.unsafeRelease(holder)
          // Started later, not inside the grant: the pool is in the middle of handing out permits.
          else spawn(pull(holder, now() - queuedFrom), false)
        }
        workerGone()
      })
    }

    /**
     * Takes a permit, pulls an item, runs it; until the input is exhausted or the batch stops.
     *
     * A worker that must wait for a permit waits as a ticket in the limiter's queue, where the limiter has them,
     * and its fiber ends: the ticket, once granted, starts a worker (a ticket is a small object; a fiber parked in
     * the queue is kilobytes, and a limit shared by many batches queues one per permit each batch may use).
     */
    const worker: Effect.Effect<void, ES | Checkpointing.Failure, R | RS> = Effect.suspend(() => {
      const holder = idleHolder()
      if (holder === undefined) return Effect.void
      if (permits.tryTake(holder)) return pull(holder, 0)
      if (enqueue !== undefined) {
        queueTicket(holder)
        return Effect.void
      }
      const queuedFrom = now()
      // Resumed without a permit: dismissed, the batch has nothing more to run.
      return Effect.flatMap(permits.take(holder), () => (holder.holding ? pull(holder, now() - queuedFrom) : Effect.void))
    })

    const skipRest: Effect.Effect<void, ES, RS> = Effect.suspend(() =>
      Effect.flatMap(source.next, (next) =>
        next === undefined ? Effect.void : finish(TaskResult.skipped(next.index, stopReason!), skipRest))
    )

    const workerCount = Math.max(1, Math.min(limiter.max, source.total ?? limiter.max))
    const workers = Effect.suspend(() => {
      // Counted as one until all are started, so that none ending at once can complete the count.
      working++
      for (let i = 0; i < workerCount; i++) {
        if (enqueue === undefined) {
          spawn(worker, true)
          continue
        }
        // A worker only for a permit free now: one that would wait starts as a ticket, without a fiber.
        const holder = idleHolder()
        if (holder === undefined) break
        if (permits.tryTake(holder)) spawn(pull(holder, 0), true)
        else queueTicket(holder)
      }
      workerGone()
      return Deferred.await(workersDone)
    })
    const all = Effect.zipRight(
      workers,
      Effect.zipRight(
        FiberSet.awaitEmpty(fibers),
        Effect.suspend(() => (stopReason !== undefined && stopReason !== "failFast" ? skipRest : Effect.void))
      )
    )
    const halting = failFast ? Effect.raceFirst(all, Deferred.await(halted)) : all
    const guarded = checkpoint === undefined ? halting : Effect.raceFirst(halting, Deferred.await(checkpoint.failed))
    yield* Effect.provideService(guarded, RateLimiter.RateLimiter, rate)
    // Halted, or a worker failed: the other fibers stop before the checkpoint is closed.
    workersStopped = true
    permits.dismissIdle(ledger)
    yield* FiberSet.clear(fibers)
    yield* closeCheckpoint(stopReason === "failFast" ? undefined : stopReason)
    ended.report = collector.finish(now())
    return { report: ended.report, failure: firstFailure }
  }))
