/**
 * The metrics a batch records with Effect's `Metric` when it runs with
 * `metrics: true`, for any exporter that reads Effect's registry
 * (`Metric.snapshot`, `@effect/opentelemetry`, the job service's
 * `/metrics`).
 *
 * Every metric carries the label `batch` (the batch's `name`, default
 * `"default"`) and the metric labels of the caller's fiber
 * (`BatchMetrics.withLabels({ profile: "openai" })` around the batch, or
 * `Effect.tagMetrics`), and a few carry
 * one label of their own (`outcome`, `reason`, `class`, `kind`, `part`), all
 * from small fixed sets: never an item.
 *
 * What it does not promise: counters and gauges are brought up to date once a
 * second and when the batch ends (the engine counts in plain fields, so that
 * metrics cost next to nothing per item); only the two latency histograms are
 * updated as each item or attempt ends. A gauge is the sum over the batches
 * running under the same labels.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"

/** 1 ms to about 9 minutes, doubling. */
const latencyBoundaries = MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 })

/** @internal */
export const keys = {
  items: MetricKey.counter("effect_batch_items_total", {
    description: "Items settled, by outcome (succeeded, failed, skipped) and reason (source, failure class or skip reason)"
  }),
  attempts: MetricKey.counter("effect_batch_attempts_total", { description: "Attempts started (calls made)" }),
  attemptFailures: MetricKey.counter("effect_batch_attempt_failures_total", {
    description: "Attempts that failed, by failure class (retried or not)"
  }),
  retries: MetricKey.counter("effect_batch_retries_total", { description: "Retries scheduled, by the failure class that caused them" }),
  itemDuration: MetricKey.histogram(
    "effect_batch_item_duration_ms",
    latencyBoundaries,
    "Item latency from admission to outcome (retries included), items that made calls"
  ),
  attemptDuration: MetricKey.histogram("effect_batch_attempt_duration_ms", latencyBoundaries, "Attempt latency, the task alone"),
  rateLimitWait: MetricKey.counter("effect_batch_rate_limit_wait_ms_total", {
    description: "Time attempts waited for the rate limiter (its cooldown gate excluded)"
  }),
  gateWait: MetricKey.counter("effect_batch_gate_wait_ms_total", { description: "Time attempts waited for the cooldown gate" }),
  gateClosures: MetricKey.counter("effect_batch_gate_closures_total", { description: "Times a 429 closed the cooldown gate" }),
  concurrencyLimit: MetricKey.gauge("effect_batch_concurrency_limit", { description: "The concurrency limit now" }),
  inFlight: MetricKey.gauge("effect_batch_in_flight", { description: "Attempts in flight now" }),
  tokens: MetricKey.counter("effect_batch_tokens_total", { description: "Tokens, by kind: estimated (before attempts), actual (settled)" }),
  cost: MetricKey.counter("effect_batch_cost_usd_total", { description: "Cost in USD, by kind: estimated, actual" }),
  timeSpent: MetricKey.counter("effect_batch_time_spent_ms_total", {
    description: "Where the items' time went, by part: queued, rate_limit, gate, in_flight, backoff (BatchReport.TimeSpent)"
  })
} as const

/**
 * The metrics, to read (`Metric.value(BatchMetrics.items.pipe(Metric.tagged("batch", "x")))`) or to find by name in
 * a snapshot.
 *
 * @since 0.2.0
 * @category metrics
 */
export const items = Metric.fromMetricKey(keys.items)
/** @since 0.2.0 @category metrics */
export const attempts = Metric.fromMetricKey(keys.attempts)
/** @since 0.2.0 @category metrics */
export const attemptFailures = Metric.fromMetricKey(keys.attemptFailures)
/** @since 0.2.0 @category metrics */
export const retries = Metric.fromMetricKey(keys.retries)
/** @since 0.2.0 @category metrics */
export const itemDuration = Metric.fromMetricKey(keys.itemDuration)
/** @since 0.2.0 @category metrics */
export const attemptDuration = Metric.fromMetricKey(keys.attemptDuration)
/** @since 0.2.0 @category metrics */
export const rateLimitWait = Metric.fromMetricKey(keys.rateLimitWait)
/** @since 0.2.0 @category metrics */
export const gateWait = Metric.fromMetricKey(keys.gateWait)
/** @since 0.2.0 @category metrics */
export const gateClosures = Metric.fromMetricKey(keys.gateClosures)
/** @since 0.2.0 @category metrics */
export const concurrencyLimit = Metric.fromMetricKey(keys.concurrencyLimit)
/** @since 0.2.0 @category metrics */
export const inFlight = Metric.fromMetricKey(keys.inFlight)
/** @since 0.2.0 @category metrics */
export const tokens = Metric.fromMetricKey(keys.tokens)
/** @since 0.2.0 @category metrics */
export const cost = Metric.fromMetricKey(keys.cost)
/** @since 0.2.0 @category metrics */
export const timeSpent = Metric.fromMetricKey(keys.timeSpent)

const withoutFiberMetrics = RuntimeFlagsPatch.disable(RuntimeFlags.RuntimeMetrics)

/**
 * Runs `effect` (a batch, or several) with its metrics labelled, as
 * `Effect.tagMetrics(labels)` does, but without Effect's fiber counters
 * inside. Those (`effect_fiber_started`, `…_lifetimes`, …, on by default) are
 * kept per label set, and under labels every fiber's start and end looks its
 * series up in the registry afresh: measured in the job service, about 2 % of
 * its CPU, for series that count the engine's own fibers.
 *
 * @since 0.2.0
 * @category combinators
 */
export const withLabels = (labels: Record<string, string>) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  effect.pipe(Effect.withRuntimeFlagsPatch(withoutFiberMetrics), Effect.tagMetrics(labels))
