/**
 * Watches a batch from outside: `Progress` events, results and rate-limiter
 * reservations in; live counters (for the progress display) and the final
 * `BatchReport` out.
 *
 * `Batch.stream` hands out results but no report, so the CLI rebuilds it with
 * `BatchReport.Collector` from what the batch lets an observer see: every
 * result (latencies, sources, failures), `AttemptStarted` (attempts),
 * `Retrying` (retries by class), `LimitChanged` (the concurrency limit over
 * time), `GateClosed`, the waits of the rate limiter's reservations, and the
 * `estimate` / `settle` costs of the task. Results that never went through
 * the batch (input lines that could not be parsed) are counted too, with 0
 * attempts.
 *
 * What it does not promise: waits are counted from `acquire` only (a start
 * granted at once waited 0 ms, as the engine counts it); an estimate is
 * counted when its attempt starts, so an attempt the budget refused is not
 * counted (as in the engine's own report).
 *
 * @since 0.1.0
 */
import type * as Batch from "../Batch.js"
import * as BatchReport from "../BatchReport.js"
import type * as Budget from "../Budget.js"
import type * as Progress from "../Progress.js"
import type * as RateLimiter from "../RateLimiter.js"
import type * as TaskResult from "../TaskResult.js"

/**
 * The live counters.
 *
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
export interface Monitor {
  /** A `Progress` event of the batch (synchronous: call it from the handler). */
  readonly event: (event: Progress.Event) => void
  /** An item's outcome (from the batch, or made by the CLI for a rejected line). */
  readonly result: (result: TaskResult.TaskResult<unknown, unknown>) => void
  /** The estimate the batch asked for before an attempt of the item with this batch index. */
  readonly estimated: (batchIndex: number, cost: Batch.Cost) => void
  /** What a successful call really cost. */
  readonly settled: (cost: Batch.Cost | undefined) => void
  /** A reservation the rate limiter granted after waiting. */
  readonly waited: (reservation: RateLimiter.Reservation) => void
  /** The number of items in the input, once counted. */
  readonly setTotal: (total: number) => void
  readonly counters: () => Counters
  /** The report of everything seen so far; `budgetExceeded` from the batch's `Budget`. */
  readonly report: (budgetExceeded: Budget.BudgetExceeded | undefined) => BatchReport.BatchReport
}

/**
 * A monitor for a batch that starts now, by `now` (clock millis), with the
 * concurrency limit `initialLimit`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly now: () => number, readonly initialLimit: number }): Monitor => {
  const { initialLimit, now } = options
  const startedAt = now()
  const collector = new BatchReport.Collector(startedAt)
  collector.limit(startedAt, initialLimit)
  const pendingEstimates = new Map<number, Batch.Cost>()
  const retrying = new Set<number>()
  let total: number | undefined
  let limit = initialLimit
  let succeeded = 0
  let failed = 0
  let skipped = 0
  const settle = (index: number) => {
    retrying.delete(index)
    pendingEstimates.delete(index)
  }
  return {
    event: (event) => {
      switch (event._tag) {
        case "AttemptStarted": {
          collector.attempts++
          retrying.delete(event.index)
          const estimate = pendingEstimates.get(event.index)
          if (estimate !== undefined) {
            collector.estimatedTokens += estimate.tokens ?? 0
            collector.estimatedCost += estimate.usd ?? 0
          }
          break
        }
        case "Retrying":
          collector.retry(event.errorClass)
          retrying.add(event.index)
          break
        case "LimitChanged":
          limit = event.limit
          collector.limit(now(), event.limit)
          break
        case "GateClosed":
          collector.gateClosures++
          break
        case "ItemSucceeded":
        case "ItemFailed":
        case "ItemSkipped":
          settle(event.index)
          break
      }
    },
    result: (result) => {
      collector.result(result)
      if (result._tag === "Succeeded") succeeded++
      else if (result._tag === "Failed") failed++
      else skipped++
    },
    estimated: (batchIndex, cost) => {
      pendingEstimates.set(batchIndex, cost)
    },
    settled: (cost) => {
      collector.actualTokens += cost?.tokens ?? 0
      collector.actualCost += cost?.usd ?? 0
    },
    waited: (reservation) => {
      collector.rateLimitWaitMs += reservation.waitedMillis
      collector.gateWaitMs += reservation.gateWaitedMillis
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
      cost: collector.actualCost,
      elapsedMs: now() - startedAt
    }),
    report: (budgetExceeded) => {
      collector.budgetExceeded = budgetExceeded
      return collector.finish(now())
    }
  }
}
