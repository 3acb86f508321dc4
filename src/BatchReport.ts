/**
 * What a finished batch did: outcomes, attempts and retries per failure
 * class, item latency percentiles, throughput, time spent waiting on the rate
 * limiter and its cooldown gate, and the concurrency limit over time.
 *
 * Latencies are per item, from admission to outcome (retry waits included),
 * over items that ran (shared, cached and skipped items excluded). Waiting
 * times are summed over attempts, so they can exceed the wall time.
 *
 * @since 0.1.0
 */
import type * as Budget from "./Budget.js"
import type * as TaskError from "./TaskError.js"
import type * as TaskResult from "./TaskResult.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface BatchReport {
  readonly total: number
  readonly succeeded: number
  readonly failed: number
  readonly skipped: number
  /** Succeeded items by where their value came from. */
  readonly sources: Readonly<Record<TaskResult.Source, number>>
  /** Final failures by class. */
  readonly failures: Readonly<Record<TaskError.Tag, number>>
  readonly skippedBy: Readonly<Record<TaskResult.SkipReason, number>>
  /** Calls made, first attempts included. */
  readonly attempts: number
  readonly retries: number
  /** Failed attempts that were retried, by class. */
  readonly retriesBy: Readonly<Record<TaskError.Tag, number>>
  readonly latencyMs: {
    readonly p50: number
    readonly p95: number
    readonly p99: number
    readonly max: number
    readonly mean: number
  }
  readonly wallMs: number
  /** Settled items per second of wall time. */
  readonly throughput: number
  readonly rateLimitWaitMs: number
  readonly gateWaitMs: number
  readonly gateClosures: number
  /** `[msSinceStart, limit]`, starting with the initial limit. */
  readonly concurrency: ReadonlyArray<readonly [number, number]>
  /** Tokens estimated before attempts (`estimate`) and reported after successful ones (`settle`). */
  readonly tokens: { readonly estimated: number, readonly actual: number }
  /** USD, likewise (`estimate(...).usd`, `settle(...).usd`). */
  readonly cost: { readonly estimated: number, readonly actual: number }
  /** Set when the budget stopped the batch. */
  readonly budgetExceeded: Budget.BudgetExceeded | undefined
}

const nonZero = (record: Readonly<Record<string, number>>): string =>
  Object.entries(record).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ") || "none"

const ms = (value: number) => (value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`)

/**
 * A plain-text table of the report, for terminals and logs.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (report: BatchReport): string => {
  const limits = report.concurrency.map(([, limit]) => limit)
  const rows: Array<readonly [string, string]> = [
    ["items", `${report.total}: ${report.succeeded} succeeded, ${report.failed} failed, ${report.skipped} skipped`],
    ["sources", nonZero(report.sources)],
    ["failures", nonZero(report.failures)],
    ["skipped", nonZero(report.skippedBy)],
    ["attempts", `${report.attempts} (${report.retries} retries: ${nonZero(report.retriesBy)})`],
    [
      "latency",
      `p50 ${ms(report.latencyMs.p50)}, p95 ${ms(report.latencyMs.p95)}, p99 ${ms(report.latencyMs.p99)}, ` +
      `max ${ms(report.latencyMs.max)}`
    ],
    ["wall time", `${ms(report.wallMs)} (${report.throughput.toFixed(1)} items/s)`],
    ["waiting", `rate limit ${ms(report.rateLimitWaitMs)}, gate ${ms(report.gateWaitMs)} (${report.gateClosures} closures)`],
    [
      "concurrency",
      limits.length === 0
        ? "n/a"
        : `${limits[0]} → ${limits[limits.length - 1]} (min ${limits.reduce((a, b) => Math.min(a, b))}, ` +
        `max ${limits.reduce((a, b) => Math.max(a, b))}, ` +
        `${limits.length - 1} changes)`
    ]
  ]
  if (report.tokens.estimated > 0 || report.tokens.actual > 0) {
    rows.push(["tokens", `estimated ${report.tokens.estimated}, actual ${report.tokens.actual}`])
  }
  if (report.cost.estimated > 0 || report.cost.actual > 0) {
    rows.push(["cost", `estimated $${report.cost.estimated.toFixed(4)}, actual $${report.cost.actual.toFixed(4)}`])
  }
  if (report.budgetExceeded !== undefined) rows.push(["budget", report.budgetExceeded.message])
  const width = Math.max(...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n")
}
