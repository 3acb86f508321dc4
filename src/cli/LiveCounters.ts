/**
 * The counters the progress display redraws while a run goes on: items done
 * by outcome, items waiting to retry, the concurrency limit and the cost so
 * far. Fed from the batch's `Progress` events, its results (and the CLI's own
 * results for input lines that could not be parsed) and the `settle` costs.
 *
 * What it does not promise: a report. The run's `BatchReport` comes from the
 * batch itself (`onReport`); these are only what a terminal line shows.
 *
 * @since 0.1.0
 */
import type * as Batch from "../Batch.js"
import type * as Progress from "../Progress.js"
import type * as TaskResult from "../TaskResult.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Counters {
  /** Items settled (succeeded, failed or skipped). */
  readonly done: number
  /** Items in the input, once known. */
  readonly total: number | undefined
  readonly succeeded: number
  readonly failed: number
  readonly skipped: number
  /** Items waiting to retry right now. */
  readonly retrying: number
  /** The concurrency limit now. */
  readonly limit: number
  /** USD of the calls settled so far. */
  readonly cost: number
  readonly elapsedMs: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface LiveCounters {
  /** A `Progress` event of the batch (synchronous: call it from the handler). */
  readonly event: (event: Progress.Event) => void
  /** An item's outcome (from the batch, or made by the CLI for a rejected line). */
  readonly result: (result: TaskResult.TaskResult<unknown, unknown>) => void
  /** What a successful call really cost. */
  readonly settled: (cost: Batch.Cost | undefined) => void
  /** The number of items in the input, once counted. */
  readonly setTotal: (total: number) => void
  readonly counters: () => Counters
}

/**
 * Counters for a run that starts now, by `now` (clock millis), with the
 * concurrency limit `initialLimit`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly now: () => number, readonly initialLimit: number }): LiveCounters => {
  const { now } = options
  const startedAt = now()
  const retrying = new Set<number>()
  let total: number | undefined
  let limit = options.initialLimit
  let succeeded = 0
  let failed = 0
  let skipped = 0
  let cost = 0
  return {
    event: (event) => {
      switch (event._tag) {
        case "AttemptStarted":
          retrying.delete(event.index)
          break
        case "Retrying":
          retrying.add(event.index)
          break
        case "LimitChanged":
          limit = event.limit
          break
        case "ItemSucceeded":
        case "ItemFailed":
        case "ItemSkipped":
          retrying.delete(event.index)
          break
      }
    },
    result: (result) => {
      if (result._tag === "Succeeded") succeeded++
      else if (result._tag === "Failed") failed++
      else skipped++
    },
    settled: (spent) => {
      cost += spent?.usd ?? 0
    },
    setTotal: (n) => {
      total = n
    },
    counters: () => ({
      done: succeeded + failed + skipped,
      total,
      succeeded,
      failed,
      skipped,
      retrying: retrying.size,
      limit,
      cost,
      elapsedMs: now() - startedAt
    })
  }
}
