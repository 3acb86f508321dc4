/**
 * Runs a task over many items with bounded (or adaptive) concurrency, typed
 * retries and rate limits, and gives every item its own outcome.
 *
 * - `run` settles every item and returns the results in input order with a
 *   `BatchReport`; one item's failure never fails the batch.
 * - `stream` emits each `TaskResult` as it settles; the input (an array, any
 *   iterable or a `Stream`) is pulled only as permits free up, so a stream of
 *   millions of items runs in bounded memory.
 * - `forEach` is the fail-fast form, like `Effect.forEach`: the first final
 *   failure interrupts everything in flight and fails the effect.
 *
 * Limits and policies come from the context: `ConcurrencyLimiter` (unless
 * `concurrency` is given; default 16), `RateLimiter` (default: unlimited, with
 * a cooldown gate of the batch's own), `RetryPolicy` (default:
 * `RetryPolicy.make()`), `Progress` (default: silent), `Budget` (default: the
 * batch's own, uncapped). Each item goes through: permit → rate limiter and its
 * gate → budget reservation → attempt (with `timeout`) → sample to the limiter
 * → on success, `settle` the actual cost; on failure, `classify` → the retry
 * policy decides (waiting without a permit) or the failure is final. The task
 * runs with the batch's `RateLimiter` in its context.
 *
 * What it does not promise: an item is attempted at least once per admission
 * and at most `maxAttempts` times, but attempts interrupted by `deadline` or by
 * interruption of the batch may have reached the provider; make tasks
 * idempotent where that matters. With a `priority` and a non-array input, the
 * order holds within a look-ahead window of 4 096 items.
 *
 * @since 0.1.0
 */
import * as Channel from "effect/Channel"
import type * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { BatchReport } from "./BatchReport.js"
import type * as Budget from "./Budget.js"
import type * as CheckpointStore from "./CheckpointStore.js"
import type * as Checkpointing from "./internal/checkpointing.js"
import * as engine from "./internal/engine.js"
import type * as RateLimiter from "./RateLimiter.js"
import type * as TaskError from "./TaskError.js"
import type * as TaskResult from "./TaskResult.js"

/**
 * What a batch reads: an array, any iterable, or a `Stream` (which may fail
 * with `ES`; the batch then stops admitting, lets in-flight items settle, and
 * fails with that error).
 *
 * @since 0.1.0
 * @category models
 */
export type Input<A, ES = never, RS = never> = Iterable<A> | Stream.Stream<A, ES, RS>

/**
 * A task: one item (and its input index) to an effect.
 *
 * @since 0.1.0
 * @category models
 */
export type Task<A, B, E, R> = (item: A, index: number) => Effect.Effect<B, E, R>

/**
 * @since 0.1.0
 * @category models
 */
export interface CacheOptions<A, B> {
  /** The item's key, e.g. `ResultCache.key({ model, params, input })`. */
  readonly key: (item: A, index: number) => string
  /** How a value is stored: `Schema.encode` before, `Schema.decodeUnknown` after. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any encoded form (Schema's `I` is invariant)
  readonly schema?: Schema.Schema<B, any> | undefined
}

/**
 * `RunId` is the type of `runId`; it exists only so that a batch's error type
 * can tell whether it has a checkpoint (see `CheckpointFailure`).
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointOptions<B, RunId extends string = string> {
  readonly runId: RunId
  /** How values are stored: `Schema.encode` before, `Schema.decodeUnknown` after. Default: the value as JSON. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any encoded form (Schema's `I` is invariant)
  readonly schema?: Schema.Schema<B, any> | undefined
  /** Run again the items that failed with `Permanent` in an earlier run. Default `false`. */
  readonly retryFailed?: boolean | undefined
  /** What else defines the run (model, parameters...): resuming with another one is refused. Default `""`. */
  readonly fingerprint?: string | undefined
  /** JSON kept with the run, e.g. what it takes to resume it. */
  readonly meta?: unknown
}

/**
 * What one attempt costs: the rate limiter reads `requests` and `tokens`, the
 * `Budget` reads `usd`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cost extends RateLimiter.Cost {
  readonly usd?: number | undefined
}

/**
 * `RunId` is the type of `checkpoint.runId`, inferred from an options
 * literal: `never` without a checkpoint, which keeps `CheckpointFailure` out
 * of the batch's error type. So `Options<A, B, E>` holds no checkpoint; a
 * variable that may hold one is typed `Options<A, B, E, string>`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<A, B, E, RunId extends string = never> {
  /**
   * Attempts in flight at once: a fixed limit for this batch alone. Integer ≥ 1.
   * Default: the `ConcurrencyLimiter` in context, or a fixed 16.
   */
  readonly concurrency?: number | undefined
  /** Per attempt; a timed-out attempt fails with `Timeout` and is retried like any failure. Default: none. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Per item, from its admission: when reached, the attempt in flight is
   * interrupted, no further attempt is made, and the item fails with
   * `Timeout` (`scope: "deadline"`). Default: none.
   */
  readonly deadline?: Duration.DurationInput | undefined
  /**
   * Items whose keys are equal (`===`/SameValueZero) while one of them is in
   * flight share its execution; the others report `source: "shared"` and make
   * no call. Default: none.
   */
  readonly key?: ((item: A, index: number) => unknown) | undefined
  /** Higher starts first; equal priorities keep input order. Default: input order. */
  readonly priority?: ((item: A, index: number) => number) | undefined
  /** Maps the task's failures onto the taxonomy. Default: `TaskError.classify`. */
  readonly classify?: ((error: E) => TaskError.TaskError) | undefined
  /**
   * What an attempt is expected to cost: requests and tokens for the rate
   * limiter, USD for the `Budget`. Default: 1 request, nothing else.
   */
  readonly estimate?: ((item: A, index: number) => Cost) | undefined
  /**
   * What a successful attempt really cost; the rate limiter and the budget
   * settle the difference. Default: the estimate.
   */
  readonly settle?: ((value: B, item: A, index: number) => Cost) | undefined
  /**
   * Reuse earlier results: an item whose `key` the `ResultCache` in context
   * holds succeeds with `source: "cache"` and no call; a success is stored
   * under its key, encoded with `schema` (default: the value itself, which
   * must then be JSON). A store that fails counts as a miss, never as a
   * failed item. Without a `ResultCache` layer, a memory store of the batch's
   * own. Default: no cache.
   */
  readonly cache?: CacheOptions<A, B> | undefined
  /**
   * A graceful stop: once this effect completes, the batch admits nothing
   * more, lets the attempts in flight finish (an item waiting to retry is not
   * retried), and the items not started come back `Skipped{reason:
   * "interrupted"}`. Interrupt the batch to stop at once. Default: none.
   */
  readonly stopWhen?: Effect.Effect<void> | undefined
  /**
   * Spans on Effect's tracer, under the caller's span: `effect-batch.item`
   * per item that makes a call (attributes `effect-batch.index`, and at its
   * end `effect-batch.outcome`, `effect-batch.attempts`,
   * `effect-batch.failure_class`, and where its time went:
   * `effect-batch.queued_ms`, `rate_limit_ms`, `gate_ms`, `in_flight_ms`,
   * `backoff_ms` (`BatchReport.TimeSpent`); an event `retry` per retry with
   * `effect-batch.failure_class` and `effect-batch.delay_ms`), and under it
   * `effect-batch.attempt` per attempt (`effect-batch.index`,
   * `effect-batch.attempt`, `effect-batch.rate_wait_ms`,
   * `effect-batch.gate_wait_ms`, and `effect-batch.failure_class` when it
   * fails), around the task's own spans. Items answered from the cache,
   * shared or restored from a checkpoint make no call and have no span.
   * Default `false`: off, the engine's path is unchanged.
   */
  readonly spans?: boolean | undefined
  /**
   * Record `BatchMetrics` with Effect's `Metric` (items by outcome, attempts
   * and retries by failure class, latency histograms, rate-limit and gate
   * waits, gate closures, the concurrency limit, in flight, tokens, cost,
   * where the time went), labelled with `name` and the caller's metric labels.
   * Counters move once a second and at the end. Default `false`.
   */
  readonly metrics?: boolean | undefined
  /** The batch's `batch` label on its metrics. Default `"default"`. */
  readonly name?: string | undefined
  /**
   * Record every outcome under `runId` in the `CheckpointStore` in context,
   * and resume from what is recorded: succeeded items come back with
   * `source: "checkpoint"` and no call, `Permanent` failures stay failed
   * unless `retryFailed`, everything else runs. The batch then fails with a
   * `CheckpointMismatch` when a resumed run's input changed (at the first
   * item that differs, or at once when the `fingerprint` differs), and with
   * the store's `CheckpointError` when it cannot be read or written (the run
   * must not go on paying for calls it would lose); the items in flight are
   * interrupted and what settled is written if the store still can. Default:
   * none.
   */
  readonly checkpoint?: CheckpointOptions<B, RunId> | undefined
  /**
   * Called once when the batch ends, however it ends, with its report:
   * `"completed"` (every item settled, or the batch stopped early and said
   * why in `skippedBy`), `"interrupted"` (a snapshot of what had settled, e.g.
   * when the consumer of `stream` stops early or the fiber is interrupted),
   * `"failed"` (the input or the checkpoint failed). It runs after the items
   * in flight are stopped, uninterruptibly: keep it short. For `stream` it is
   * the only way to the report; it counts every item the batch settled,
   * including results not yet taken from the stream. Default: none.
   */
  readonly onReport?: ((report: BatchReport, ending: Ending) => Effect.Effect<void>) | undefined
  /**
   * Called with each result as it settles, on the fiber that settled it:
   * where a consumer per result costs less than a stream step (hundreds of
   * small batches at once, each result written as it comes). Return
   * `undefined` when it is handled at once, or an effect the item's worker
   * waits for before it goes on (backpressure); its failures are defects, so
   * handle them inside. Default: none.
   */
  readonly onResult?: ((result: Result<B, E>) => Effect.Effect<void> | undefined) | undefined
  /** `stream` only: settled results buffered ahead of a slow consumer. Default `256`. */
  readonly bufferSize?: number | undefined
}

/**
 * What a batch with a checkpoint can fail with, beyond its input's error:
 * `never` for a batch without one (`RunId` is then `never`).
 *
 * @since 0.1.0
 * @category models
 */
export type CheckpointFailure<RunId extends string> = [RunId] extends [never] ? never
  : CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch

/**
 * How a batch ended, as `onReport` is told.
 *
 * @since 0.1.0
 * @category models
 */
export type Ending = "completed" | "interrupted" | "failed"

/**
 * @since 0.1.0
 * @category models
 */
export type Result<B, E> = TaskResult.TaskResult<B, E | TaskError.TaskError>

/**
 * @since 0.1.0
 * @category models
 */
export interface RunResult<B, E> {
  /** `results[i]` is the outcome of the i-th input item. */
  readonly results: ReadonlyArray<Result<B, E>>
  readonly report: BatchReport
}

const isDataFirst = (args: IArguments) => typeof args[0] !== "function"

/**
 * Settles every item; results in input order, with a report.
 *
 * @since 0.1.0
 * @category running
 */
export const run: {
  <A, B, E, R, RunId extends string = never>(
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): <ES = never, RS = never>(items: Input<A, ES, RS>) => Effect.Effect<RunResult<B, E>, ES | CheckpointFailure<RunId>, R | RS>
  <A, B, E, R, ES = never, RS = never, RunId extends string = never>(
    items: Input<A, ES, RS>,
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): Effect.Effect<RunResult<B, E>, ES | CheckpointFailure<RunId>, R | RS>
} = dual(
  isDataFirst,
  <A, B, E, R, ES, RS>(items: Input<A, ES, RS>, task: Task<A, B, E, R>, options: Options<A, B, E> = {}) =>
    Effect.suspend(() => {
      const results: Array<Result<B, E>> = Array.isArray(items) ? new Array(items.length) : []
      return Effect.map(
        engine.run(items, task, options, (result) => {
          results[result.index] = result
          return undefined
        }, false),
        ({ report }): RunResult<B, E> => ({ results, report })
      )
    })
)

/**
 * `Mailbox.toStream`, but the reader yields once before each take. Woken as
 * soon as one result lands, it would otherwise take ~3 at a time and pay a
 * stream step for each handful; after one yield, every worker already
 * scheduled has settled its item too, and the chunks are tens of results long.
 */
const toStreamBatched = <A, E>(mailbox: Mailbox.ReadonlyMailbox<A, E>): Stream.Stream<A, E> => {
  const take = Effect.zipRight(Effect.yieldNow(), mailbox.takeAll)
  const loop: Channel.Channel<Chunk.Chunk<A>, unknown, E, unknown, void, unknown> = Channel.flatMap(
    Channel.fromEffect(take),
    ([messages, done]) =>
      done
        ? messages.length === 0 ? Channel.void : Channel.write(messages)
        : Channel.zipRight(Channel.write(messages), loop)
  )
  return Stream.fromChannel(loop)
}

/**
 * Emits each item's result as it settles. Its report goes to `onReport`, once
 * the batch ends: on completion, or as a snapshot when the stream is
 * interrupted (a consumer that stops early interrupts the batch).
 *
 * @example
 * ```ts
 * Batch.stream(items, task, {
 *   onReport: (report, ending) => Console.log(ending, BatchReport.format(report))
 * }).pipe(Stream.runForEach(write))
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const stream: {
  <A, B, E, R, RunId extends string = never>(
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): <ES = never, RS = never>(items: Input<A, ES, RS>) => Stream.Stream<Result<B, E>, ES | CheckpointFailure<RunId>, R | RS>
  <A, B, E, R, ES = never, RS = never, RunId extends string = never>(
    items: Input<A, ES, RS>,
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): Stream.Stream<Result<B, E>, ES | CheckpointFailure<RunId>, R | RS>
} = dual(
  isDataFirst,
  <A, B, E, R, ES, RS>(items: Input<A, ES, RS>, task: Task<A, B, E, R>, options: Options<A, B, E> = {}) =>
    Stream.unwrapScoped(Effect.gen(function*() {
      const mailbox = yield* Mailbox.make<Result<B, E>, ES | Checkpointing.Failure>({ capacity: options.bufferSize ?? 256 })
      // A synchronous offer while there is room: an Effect per result would double the cost per item.
      const emit = (result: Result<B, E>) => (mailbox.unsafeOffer(result) ? undefined : Effect.asVoid(mailbox.offer(result)))
      yield* engine.run(items, task, options, emit, false).pipe(
        Effect.matchCauseEffect({ onSuccess: () => mailbox.end, onFailure: (cause) => mailbox.failCause(cause) }),
        Effect.forkScoped
      )
      return toStreamBatched(mailbox)
    }))
)

/**
 * Fail-fast: the values in input order, or the first final failure (which
 * interrupts every item still in flight), or `BudgetExceeded` when the budget
 * stopped admitting.
 *
 * @since 0.1.0
 * @category running
 */
export const forEach: {
  <A, B, E, R, RunId extends string = never>(
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): <ES = never, RS = never>(
    items: Input<A, ES, RS>
  ) => Effect.Effect<Array<B>, E | TaskError.TaskError | Budget.BudgetExceeded | ES | CheckpointFailure<RunId>, R | RS>
  <A, B, E, R, ES = never, RS = never, RunId extends string = never>(
    items: Input<A, ES, RS>,
    task: Task<A, B, E, R>,
    options?: Options<A, B, E, RunId>
  ): Effect.Effect<Array<B>, E | TaskError.TaskError | Budget.BudgetExceeded | ES | CheckpointFailure<RunId>, R | RS>
} = dual(
  isDataFirst,
  <A, B, E, R, ES, RS>(items: Input<A, ES, RS>, task: Task<A, B, E, R>, options: Options<A, B, E> = {}) =>
    Effect.suspend(() => {
      const values: Array<B> = Array.isArray(items) ? new Array(items.length) : []
      return Effect.flatMap(
        engine.run(items, task, options, (result) => {
          if (result._tag === "Succeeded") values[result.index] = result.value
          return undefined
        }, true),
        ({ failure, report }): Effect.Effect<Array<B>, E | TaskError.TaskError | Budget.BudgetExceeded> =>
          Option.match(failure, {
            onNone: () => (report.budgetExceeded === undefined ? Effect.succeed(values) : Effect.fail(report.budgetExceeded)),
            onSome: Effect.fail
          })
      )
    })
)
