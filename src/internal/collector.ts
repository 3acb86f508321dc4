/**
 * Accumulates a `BatchReport` while a batch runs: the engine counts into it
 * with plain mutable fields (every step is paid per item), and `finish`
 * turns the counts into a report, at the end or as a snapshot.
 */
import type { BatchReport, TimeSpent } from "../BatchReport.js"
import type * as Budget from "../Budget.js"
import * as TaskError from "../TaskError.js"
import type * as TaskResult from "../TaskResult.js"

const zeroBy = <K extends string>(keys: ReadonlyArray<K>): Record<K, number> =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>

export const sources: ReadonlyArray<TaskResult.Source> = ["call", "cache", "checkpoint", "shared"]
export const skipReasons: ReadonlyArray<TaskResult.SkipReason> = ["quota", "budget", "failFast", "interrupted"]

const percentile = (sorted: Float64Array, q: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!

export class Collector {
  private latencies = new Float64Array(1024)
  private latencyCount = 0
  private succeeded = 0
  private failed = 0
  private skipped = 0
  // Read as they run by `metricsRecorder`.
  readonly sources = zeroBy(sources)
  readonly failures = zeroBy(TaskError.tags)
  readonly skippedBy = zeroBy(skipReasons)
  readonly retriesBy = zeroBy(TaskError.tags)
  /** Failed attempts by class, retried or final. */
  readonly attemptFailures = zeroBy(TaskError.tags)
  attempts = 0
  rateLimitWaitMs = 0
  gateWaitMs = 0
  gateClosures = 0
  estimatedTokens = 0
  actualTokens = 0
  estimatedCost = 0
  actualCost = 0
  budgetExceeded: Budget.BudgetExceeded | undefined = undefined
  readonly spent = { items: 0, queuedMs: 0, rateLimitMs: 0, gateMs: 0, inFlightMs: 0, backoffMs: 0, wallMs: 0 }
  private readonly concurrency: Array<readonly [number, number]> = []

  constructor(readonly startedAt: number) {}

  /** The concurrency limit now: the last one recorded. */
  get currentLimit(): number {
    return this.concurrency.at(-1)?.[1] ?? 0
  }

  limit(at: number, limit: number): void {
    this.concurrency.push([at - this.startedAt, limit])
  }

  /** Adds an item's time (one that was admitted to make calls, whatever its outcome). */
  timeSpent(item: Omit<TimeSpent, "wallMs">, wallMs: number): void {
    const spent = this.spent
    spent.items++
    spent.queuedMs += item.queuedMs
    spent.rateLimitMs += item.rateLimitMs
    spent.gateMs += item.gateMs
    spent.inFlightMs += item.inFlightMs
    spent.backoffMs += item.backoffMs
    spent.wallMs += wallMs
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
      timeSpent: { ...this.spent },
      budgetExceeded: this.budgetExceeded
    }
  }
}
