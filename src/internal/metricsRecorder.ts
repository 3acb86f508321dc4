/**
 * Brings `BatchMetrics` up to date from a batch's `Collector`: the engine
 * counts in plain fields anyway, so the counters and gauges are moved by the
 * difference since the last flush (once a second and at the end) instead of
 * per item. Measured on 1 000 000 no-op items, a `Metric.increment` per item
 * per metric would cost more than the batch itself; see the README.
 *
 * Hooks are resolved once per label set (a registry lookup each), and only
 * for a series that moves, so a batch that never retries exports no
 * zero-valued retry series.
 */
import * as Metric from "effect/Metric"
import type * as MetricHook from "effect/MetricHook"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"
import { keys } from "../BatchMetrics.js"
import * as TaskError from "../TaskError.js"
import type { Collector } from "./collector.js"
import { skipReasons, sources } from "./collector.js"

type NumberKey = MetricKey.MetricKey<MetricKeyType.MetricKeyType<number, unknown>>

/** One series: where its value is read, and the hook it moves. */
interface Series {
  readonly key: NumberKey
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  readonly read: (collector: Collector, live: Live) => number
  /** Gauges move by `modify` (they add); counters by `update`. */
  readonly gauge: boolean
  hook: MetricHook.MetricHook<number, unknown> | undefined
  last: number
}

/** What the engine knows that the collector does not count. */
export interface Live {
  readonly inFlight: number
  readonly limit: number
}

export interface Recorder {
  readonly itemDuration: (ms: number) => void
  readonly attemptDuration: (ms: number) => void
  /** Moves every series that changed; `live` zero at the end (a gauge then gives back this batch's share). */
  readonly flush: (collector: Collector, live: Live) => void
}

export const make = (name: string, callerLabels: ReadonlyArray<MetricLabel.MetricLabel>): Recorder => {
  const base = [MetricLabel.make("batch", name), ...callerLabels]
  const hookOf = <In>(
    key: MetricKey.MetricKey<MetricKeyType.MetricKeyType<In, unknown>>,
    labels: ReadonlyArray<MetricLabel.MetricLabel>
  ) => Metric.globalMetricRegistry.get(MetricKey.taggedWithLabels(key, labels)) as MetricHook.MetricHook<In, unknown>
  const series: Array<Series> = []
  const add = (
    key: NumberKey,
    read: Series["read"],
    label?: readonly [string, string],
    second?: readonly [string, string],
    gauge = false
  ) => {
    const labels = [...base]
    if (label !== undefined) labels.push(MetricLabel.make(...label))
    if (second !== undefined) labels.push(MetricLabel.make(...second))
    series.push({ key, labels, read, gauge, hook: undefined, last: 0 })
  }
  for (const source of sources) add(keys.items, (c) => c.sources[source], ["outcome", "succeeded"], ["reason", source])
  for (const tag of TaskError.tags) add(keys.items, (c) => c.failures[tag], ["outcome", "failed"], ["reason", tag])
  for (const reason of skipReasons) add(keys.items, (c) => c.skippedBy[reason], ["outcome", "skipped"], ["reason", reason])
  add(keys.attempts, (c) => c.attempts)
  for (const tag of TaskError.tags) {
    add(keys.attemptFailures, (c) => c.attemptFailures[tag], ["class", tag])
    add(keys.retries, (c) => c.retriesBy[tag], ["class", tag])
  }
  add(keys.rateLimitWait, (c) => c.rateLimitWaitMs)
  add(keys.gateWait, (c) => c.gateWaitMs)
  add(keys.gateClosures, (c) => c.gateClosures)
  add(keys.tokens, (c) => c.estimatedTokens, ["kind", "estimated"])
  add(keys.tokens, (c) => c.actualTokens, ["kind", "actual"])
  add(keys.cost, (c) => c.estimatedCost, ["kind", "estimated"])
  add(keys.cost, (c) => c.actualCost, ["kind", "actual"])
  add(keys.timeSpent, (c) => c.spent.queuedMs, ["part", "queued"])
  add(keys.timeSpent, (c) => c.spent.rateLimitMs, ["part", "rate_limit"])
  add(keys.timeSpent, (c) => c.spent.gateMs, ["part", "gate"])
  add(keys.timeSpent, (c) => c.spent.inFlightMs, ["part", "in_flight"])
  add(keys.timeSpent, (c) => c.spent.backoffMs, ["part", "backoff"])
  add(keys.inFlight, (_, live) => live.inFlight, undefined, undefined, true)
  add(keys.concurrencyLimit, (_, live) => live.limit, undefined, undefined, true)

  const itemHook = hookOf(keys.itemDuration, base)
  const attemptHook = hookOf(keys.attemptDuration, base)
  return {
    itemDuration: (ms) => itemHook.update(ms),
    attemptDuration: (ms) => attemptHook.update(ms),
    flush: (collector, live) => {
      for (const s of series) {
        const value = s.read(collector, live)
        const delta = value - s.last
        if (delta === 0) continue
        s.last = value
        s.hook ??= hookOf(s.key, s.labels)
        if (s.gauge) s.hook.modify(delta)
        else s.hook.update(delta)
      }
    }
  }
}
