/**
 * The outcome of one item of a batch.
 *
 * Every item of a batch comes out as exactly one `TaskResult` carrying its
 * input `index`: `Succeeded` (with where the value came from), `Failed` (with
 * the last error and its class) or `Skipped` (never finished because the batch
 * stopped admitting work: the quota ran out, the budget was spent, a fail-fast
 * batch failed, or the batch was interrupted).
 *
 * Results are plain immutable objects so a million of them stay cheap; they
 * are not `Equal`-comparable by value beyond what `toEqual` does.
 *
 * @since 0.1.0
 */
import type * as TaskError from "./TaskError.js"

/**
 * Where a successful value came from: a real call, the result cache, a
 * checkpoint of an earlier run, another in-flight item with the same key, or
 * a provider's asynchronous batch (`BatchApi`).
 *
 * @since 0.1.0
 * @category models
 */
export type Source = "call" | "cache" | "checkpoint" | "shared" | "batch"

/**
 * Why an item was not run to completion.
 *
 * @since 0.1.0
 * @category models
 */
export type SkipReason = "quota" | "budget" | "failFast" | "interrupted"

/**
 * @since 0.1.0
 * @category models
 */
export interface Succeeded<out A> {
  readonly _tag: "Succeeded"
  readonly index: number
  readonly value: A
  /** Calls made for this item (0 when the value was shared, cached or checkpointed). */
  readonly attempts: number
  /** From the item's admission to its outcome, including retry waits. */
  readonly durationMs: number
  readonly source: Source
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Failed<out E> {
  readonly _tag: "Failed"
  readonly index: number
  /** The last failure, as the task produced it (or a `TaskError` the engine made). */
  readonly error: E
  /** What `classify` made of `error`; decides retries and reporting. */
  readonly errorClass: TaskError.Tag
  readonly attempts: number
  readonly durationMs: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Skipped {
  readonly _tag: "Skipped"
  readonly index: number
  readonly reason: SkipReason
  /** Calls made before the batch stopped (0 for items never started). */
  readonly attempts: number
}

/**
 * @since 0.1.0
 * @category models
 */
export type TaskResult<A, E> = Succeeded<A> | Failed<E> | Skipped

/**
 * @since 0.1.0
 * @category constructors
 */
export const succeeded = <A>(
  index: number,
  value: A,
  attempts: number,
  durationMs: number,
  source: Source = "call"
): Succeeded<A> => ({ _tag: "Succeeded", index, value, attempts, durationMs, source })

/**
 * @since 0.1.0
 * @category constructors
 */
export const failed = <E>(
  index: number,
  error: E,
  errorClass: TaskError.Tag,
  attempts: number,
  durationMs: number
): Failed<E> => ({ _tag: "Failed", index, error, errorClass, attempts, durationMs })

/**
 * @since 0.1.0
 * @category constructors
 */
export const skipped = (index: number, reason: SkipReason, attempts = 0): Skipped => ({
  _tag: "Skipped",
  index,
  reason,
  attempts
})

/**
 * @since 0.1.0
 * @category guards
 */
export const isSucceeded = <A, E>(result: TaskResult<A, E>): result is Succeeded<A> => result._tag === "Succeeded"

/**
 * @since 0.1.0
 * @category guards
 */
export const isFailed = <A, E>(result: TaskResult<A, E>): result is Failed<E> => result._tag === "Failed"

/**
 * @since 0.1.0
 * @category guards
 */
export const isSkipped = <A, E>(result: TaskResult<A, E>): result is Skipped => result._tag === "Skipped"

/**
 * @since 0.1.0
 * @category pattern matching
 */
export const match = <A, E, B, C = B, D = B>(
  result: TaskResult<A, E>,
  cases: {
    readonly onSucceeded: (result: Succeeded<A>) => B
    readonly onFailed: (result: Failed<E>) => C
    readonly onSkipped: (result: Skipped) => D
  }
): B | C | D => {
  switch (result._tag) {
    case "Succeeded":
      return cases.onSucceeded(result)
    case "Failed":
      return cases.onFailed(result)
    case "Skipped":
      return cases.onSkipped(result)
  }
}
