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
 * Where an item's time went, in ms, from the moment it (or the worker that
 * admitted it) began waiting for a concurrency permit to its outcome. The
 * parts are measured at each wait's two ends and summed over attempts; what
 * they leave of `wallMs` is the engine's own work (cache lookups, progress
 * handlers, checkpoint writes), next to nothing unless a handler is slow.
 *
 * @since 0.2.0
 * @category models
 */
export interface TimeSpent {
  /** Waiting for a concurrency permit: before the first attempt, and again before each retry. */
  readonly queuedMs: number
  /** Holding a permit, waiting for the rate limiter to grant a start. */
  readonly rateLimitMs: number
  /** Holding a permit, waiting for the cooldown gate a 429 closed. */
  readonly gateMs: number
  /** Attempts running: the task, i.e. the provider's time and the network. */
  readonly inFlightMs: number
  /** Sleeping between attempts, as the retry policy said. */
  readonly backoffMs: number
  readonly wallMs: number
}

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
  /**
   * Where the time went, summed over the items that were admitted to make
   * calls (cached, shared and restored items take none of it).
   */
  readonly timeSpent: TimeSpent & { readonly items: number }
}

/**
 * @since 0.2.0
 * @category models
 */
export type TimePart = "queued" | "rateLimit" | "gate" | "inFlight" | "backoff" | "other"

/**
 * @since 0.2.0
 * @category models
 */
export interface TimeShare {
  readonly part: TimePart
  readonly ms: number
  /** Of the summed wall time, 0 to 1. */
  readonly share: number
}

/**
 * The parts of `spent`, largest first; `other` is what the measured parts
 * leave of the wall time.
 *
 * @since 0.2.0
 * @category formatting
 */
export const timeShares = (spent: TimeSpent): ReadonlyArray<TimeShare> => {
  const measured: ReadonlyArray<readonly [TimePart, number]> = [
    ["inFlight", spent.inFlightMs],
    ["queued", spent.queuedMs],
    ["rateLimit", spent.rateLimitMs],
    ["gate", spent.gateMs],
    ["backoff", spent.backoffMs]
  ]
  const other = Math.max(0, spent.wallMs - measured.reduce((sum, [, ms]) => sum + ms, 0))
  const total = Math.max(spent.wallMs, 1e-9)
  return [...measured, ["other", other] as const]
    .map(([part, ms]) => ({ part, ms, share: ms / total }))
    .sort((a, b) => b.ms - a.ms)
}

const partNames: Record<TimePart, string> = {
  inFlight: "in flight",
  queued: "queued for a permit",
  rateLimit: "rate limit",
  gate: "cooldown gate",
  backoff: "backoff",
  other: "engine"
}

const percent = (share: number) => `${Math.round(share * 100)} %`

/**
 * The parts of `spent` by what caused them, largest first: the time items
 * waited for a permit is charged to what the permits' holders were doing
 * meanwhile (the rate limit, the gate, the call in flight), in proportion,
 * since a permit is held through all three. Items queued behind permits that
 * wait on the rate limiter wait on the rate limiter too. `queued` remains
 * only when no permit was ever held.
 *
 * @since 0.2.0
 * @category formatting
 */
export const causes = (spent: TimeSpent): ReadonlyArray<TimeShare> => {
  const held = spent.rateLimitMs + spent.gateMs + spent.inFlightMs
  const charged = (ms: number) => (held > 0 ? ms + (spent.queuedMs * ms) / held : ms)
  return timeShares({
    ...spent,
    queuedMs: held > 0 ? 0 : spent.queuedMs,
    rateLimitMs: charged(spent.rateLimitMs),
    gateMs: charged(spent.gateMs),
    inFlightMs: charged(spent.inFlightMs)
  })
}

/**
 * One line on what held the batch back: its largest cause (`causes`) and
 * what to do about it; `undefined` when no item made a call.
 *
 * @since 0.2.0
 * @category formatting
 */
export const verdict = (report: BatchReport): string | undefined => {
  if (report.timeSpent.items === 0 || report.timeSpent.wallMs <= 0) return undefined
  const top = causes(report.timeSpent)[0]!
  const limit = report.concurrency.length === 0 ? undefined : report.concurrency[report.concurrency.length - 1]![1]
  const at = limit === undefined ? "" : ` (${limit} at the end)`
  const share = percent(top.share)
  switch (top.part) {
    case "inFlight":
      return `${share} in flight: the provider's own time set the pace; more concurrency${at} goes faster if the provider allows it`
    case "queued":
      return `${share} queued for a concurrency permit: the concurrency limit${at} held items back; raise it if the provider allows`
    case "rateLimit":
      return `${share} waiting on the rate limit: raise the limit or accept the pace`
    case "gate":
      return `${share} waiting on the cooldown gate after 429s: the provider refused starts; set the rate limit to its real one`
    case "backoff":
      return `${share} backing off between retries (${nonZero(report.retriesBy)}): fix what fails, or retry less`
    case "other":
      return `${share} in the engine's own work: a slow progress handler or cache? (Progress.layerQueue decouples one)`
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
  const held = verdict(report)
  if (held !== undefined) {
    const shares = timeShares(report.timeSpent).filter((s) => s.ms > 0)
    rows.push(["time spent", shares.map((s) => `${partNames[s.part]} ${percent(s.share)}`).join(", ")])
    rows.push(["held back", held])
  }
  const width = Math.max(...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n")
}
