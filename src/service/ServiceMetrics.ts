/**
 * The job service's own metrics, beside the `BatchMetrics` its chunks record
 * (labelled `batch="job"`, `profile`, `model`): jobs by state and the items
 * waiting to run (read from the `JobStore` when `/metrics` is scraped),
 * submissions, and SSE subscribers.
 *
 * What it does not promise: with several processes, each serves its own
 * page. Jobs by state and items waiting come from the shared database, so
 * every process shows the same; submissions and subscribers are the ones
 * this process took; batch metrics are those of the chunks this process ran.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Job from "./Job.js"
import * as JobStore from "./JobStore.js"

/**
 * @since 0.2.0
 * @category metrics
 */
export const jobs = Metric.gauge("effect_batch_service_jobs", { description: "Jobs by state (every tenant)" })

/**
 * @since 0.2.0
 * @category metrics
 */
export const pendingItems = Metric.gauge("effect_batch_service_pending_items", {
  description: "Items of queued and running jobs still to run: the queue's depth"
})

/**
 * @since 0.2.0
 * @category metrics
 */
export const submissions = Metric.counter("effect_batch_service_submissions_total", {
  description: "Job submissions by outcome: accepted (a job made or found by its idempotency key) or refused",
  incremental: true
})

/**
 * @since 0.2.0
 * @category metrics
 */
export const sseSubscribers = Metric.gauge("effect_batch_service_sse_subscribers", { description: "SSE event streams open now" })

/**
 * Counts a submission by how it ended.
 *
 * @since 0.2.0
 * @category recording
 */
export const trackSubmission = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapBoth(self, {
    onSuccess: () => Metric.increment(Metric.tagged(submissions, "outcome", "accepted")),
    onFailure: () => Metric.increment(Metric.tagged(submissions, "outcome", "refused"))
  })

/**
 * Counts an open SSE subscription until the scope closes.
 *
 * @since 0.2.0
 * @category recording
 */
export const trackSubscriber: Effect.Effect<void, never, Scope.Scope> = Effect.acquireRelease(
  Metric.increment(sseSubscribers),
  () => Metric.incrementBy(sseSubscribers, -1)
)

/**
 * Sets the gauges read from the store. A store that cannot answer leaves them
 * as they were, and says so in the log: a scrape never fails for it.
 *
 * @since 0.2.0
 * @category recording
 */
export const refresh: Effect.Effect<void, never, JobStore.JobStore> = Effect.flatMap(JobStore.JobStore, (store) =>
  store.census.pipe(
    Effect.flatMap((census) =>
      Effect.zipRight(
        Effect.forEach(Job.JobState.literals, (state) => Metric.set(Metric.tagged(jobs, "state", state), census.jobs[state]), {
          discard: true
        }),
        Metric.set(pendingItems, census.pendingItems)
      )
    ),
    Effect.catchAll((error) => Effect.logWarning("effect-batch: /metrics could not read the job store", error))
  ))
