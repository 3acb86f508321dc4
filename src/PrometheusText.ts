/**
 * Effect's metric registry in the Prometheus text exposition format
 * (version 0.0.4), for a `/metrics` endpoint: the job service serves it, and
 * a program of your own can serve `PrometheusText.render` the same way.
 *
 * Counters, gauges, histograms (cumulative buckets, `_sum`, `_count`),
 * summaries (`quantile`, `_sum`, `_count`) and frequencies (one series per
 * word, in a `value` label) are written; names and label names are made
 * valid (any other character becomes `_`), label values and help texts
 * escaped.
 *
 * What it does not promise: `@effect/opentelemetry`'s Prometheus exporter is
 * not used (it would take the OpenTelemetry SDK as a dependency of the job
 * service for one text format); two metrics of one name and different types
 * are written under the first one's type only, as Prometheus would refuse
 * the page otherwise.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"

/**
 * The content type of the page.
 *
 * @since 0.2.0
 * @category constants
 */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

const sanitizeName = (name: string) => {
  const valid = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(valid) ? valid : `_${valid}`
}
const sanitizeLabel = (name: string) => {
  const valid = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[a-zA-Z_]/.test(valid) ? valid : `_${valid}`
}
const escapeValue = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")
const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const number = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

type Labels = ReadonlyArray<readonly [string, string]>

const labelsText = (labels: Labels): string =>
  labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${sanitizeLabel(k)}="${escapeValue(v)}"`).join(",")}}`

type Kind = "counter" | "gauge" | "histogram" | "summary"

/** The sample lines of one series, and its Prometheus type. */
const samplesOf = (name: string, labels: Labels, state: MetricState.MetricState.Untyped): [Kind, Array<string>] | undefined => {
  const line = (suffix: string, extra: Labels, value: number | bigint) => `${name}${suffix}${labelsText([...labels, ...extra])} ${number(value)}`
  if (MetricState.isCounterState(state)) return ["counter", [line("", [], state.count)]]
  if (MetricState.isGaugeState(state)) return ["gauge", [line("", [], state.value)]]
  if (MetricState.isHistogramState(state)) {
    const lines = state.buckets.map(([le, count]) => line("_bucket", [["le", number(le)]], count))
    if (state.buckets.at(-1)?.[0] !== Number.POSITIVE_INFINITY) lines.push(line("_bucket", [["le", "+Inf"]], state.count))
    lines.push(line("_sum", [], state.sum), line("_count", [], state.count))
    return ["histogram", lines]
  }
  if (MetricState.isSummaryState(state)) {
    const lines = state.quantiles.flatMap(([q, value]) =>
      Option.isSome(value) ? [line("", [["quantile", String(q)]], value.value)] : []
    )
    lines.push(line("_sum", [], state.sum), line("_count", [], state.count))
    return ["summary", lines]
  }
  if (MetricState.isFrequencyState(state)) {
    return ["counter", Array.from(state.occurrences, ([word, count]) => line("", [["value", word]], count))]
  }
  return undefined
}

/**
 * The page for `pairs`: per metric name, its `# HELP` (when it has a
 * description) and `# TYPE` lines, then its series.
 *
 * @since 0.2.0
 * @category rendering
 */
export const render = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const byName = new Map<string, { kind: Kind, help: string | undefined, lines: Array<string> }>()
  for (const pair of pairs) {
    const name = sanitizeName(pair.metricKey.name)
    const labels: Labels = pair.metricKey.tags.map((tag) => [tag.key, tag.value] as const)
    const samples = samplesOf(name, labels, pair.metricState)
    if (samples === undefined) continue
    const [kind, lines] = samples
    const entry = byName.get(name)
    if (entry === undefined) {
      byName.set(name, { kind, help: Option.getOrUndefined(pair.metricKey.description), lines: [...lines] })
    } else if (entry.kind === kind) {
      entry.lines.push(...lines)
    }
  }
  const out: Array<string> = []
  for (const [name, { help, kind, lines }] of [...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (help !== undefined && help !== "") out.push(`# HELP ${name} ${escapeHelp(help)}`)
    out.push(`# TYPE ${name} ${kind}`, ...lines)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/**
 * The page for every metric in Effect's registry now.
 *
 * @since 0.2.0
 * @category rendering
 */
export const snapshot: Effect.Effect<string> = Effect.map(Metric.snapshot, render)
