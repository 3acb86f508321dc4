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
import * as TaskError from "./TaskError.js"
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

const zeroBy = <K extends string>(keys: ReadonlyArray<K>): Record<K, number> =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>

const sources: ReadonlyArray<TaskResult.Source> = ["call", "cache", "checkpoint", "shared"]
const skipReasons: ReadonlyArray<TaskResult.SkipReason> = ["quota", "budget", "failFast", "interrupted"]

const percentile = (sorted: Float64Array, q: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!

/**
 * Accumulates a report while a batch runs. Internal to the engine, exported
 * for engines built on top (e.g. the job service).
 *
 * @since 0.1.0
 * @category collecting
 */
export class Collector {
  private latencies = new Float64Array(1024)
  private latencyCount = 0
  private succeeded = 0
  private failed = 0
  private skipped = 0
  private readonly sources = zeroBy(sources)
  private readonly failures = zeroBy(TaskError.tags)
  private readonly skippedBy = zeroBy(skipReasons)
  private readonly retriesBy = zeroBy(TaskError.tags)
  attempts = 0
  rateLimitWaitMs = 0
  gateWaitMs = 0
  gateClosures = 0
  estimatedTokens = 0
  actualTokens = 0
  estimatedCost = 0
  actualCost = 0
  budgetExceeded: Budget.BudgetExceeded | undefined = undefined
  private readonly concurrency: Array<readonly [number, number]> = []

  constructor(readonly startedAt: number) {}

  limit(at: number, limit: number): void {
    this.concurrency.push([at - this.startedAt, limit])
  }

  retry(errorClass: TaskError.Tag): void {
    this.retriesBy[errorClass]++
  }

  result(result: TaskResult.TaskResult<unknown, unknown>): void {
    switch (result._tag) {
      case "Succeeded":
        this.succeeded++
        this.sources[result.source]++
        if (result.source === "call") this.latency(result.durationMs)
        break
      case "Failed":
        this.failed++
        this.failures[result.errorClass]++
        if (result.attempts > 0) this.latency(result.durationMs)
        break
      case "Skipped":
        this.skipped++
        this.skippedBy[result.reason]++
        break
    }
  }

  private latency(ms: number): void {
    if (this.latencyCount === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2)
      grown.set(this.latencies)
      this.latencies = grown
    }
    this.latencies[this.latencyCount++] = ms
  }

  finish(at: number): BatchReport {
    const sorted = this.latencies.slice(0, this.latencyCount).sort()
    let sum = 0
    for (const ms of sorted) sum += ms
    const total = this.succeeded + this.failed + this.skipped
    const wallMs = at - this.startedAt
    const retries = Object.values(this.retriesBy).reduce((a, b) => a + b, 0)
    return {
      total,
      succeeded: this.succeeded,
      failed: this.failed,
      skipped: this.skipped,
      sources: { ...this.sources },
      failures: { ...this.failures },
      skippedBy: { ...this.skippedBy },
      attempts: this.attempts,
      retries,
      retriesBy: { ...this.retriesBy },
      latencyMs: {
        p50: percentile(sorted, 0.5),
        p95: percentile(sorted, 0.95),
        p99: percentile(sorted, 0.99),
        max: sorted.length === 0 ? 0 : sorted[sorted.length - 1]!,
        mean: sorted.length === 0 ? 0 : sum / sorted.length
      },
      wallMs,
      throughput: wallMs > 0 ? (total * 1000) / wallMs : 0,
      rateLimitWaitMs: this.rateLimitWaitMs,
      gateWaitMs: this.gateWaitMs,
      gateClosures: this.gateClosures,
      concurrency: [...this.concurrency],
      tokens: { estimated: this.estimatedTokens, actual: this.actualTokens },
      cost: { estimated: this.estimatedCost, actual: this.actualCost },
      budgetExceeded: this.budgetExceeded
    }
  }
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
