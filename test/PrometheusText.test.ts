/**
 * `PrometheusText.render`, read back by a Prometheus text-format parser
 * (`parse-prometheus-text-format`, a port of the Prometheus Python client's):
 * every kind of Effect metric, labels that need escaping, names that need
 * mending.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import parse from "parse-prometheus-text-format"
import * as PrometheusText from "../src/PrometheusText.js"

/** The page for this test's metrics alone (the registry is global). */
const page = (prefix: string) =>
  PrometheusText.render(Metric.unsafeSnapshot().filter((pair) => pair.metricKey.name.startsWith(prefix)))

describe("PrometheusText", () => {
  it.effect("counters, gauges, histograms, summaries and frequencies, as the parser reads them", () =>
    Effect.gen(function*() {
      const p = "prom_kinds_"
      const requests = Metric.counter(`${p}requests_total`, { description: "Requests,\nby route \\ method" })
      yield* Metric.incrementBy(Metric.tagged(Metric.tagged(requests, "route", "/jobs"), "method", "POST"), 3)
      yield* Metric.increment(Metric.tagged(requests, "route", "a \"quoted\"\nline \\ here"))
      yield* Metric.set(Metric.gauge(`${p}in_flight`), 7)
      const latency = Metric.histogram(`${p}latency_ms`, MetricBoundaries.fromIterable([10, 100]))
      for (const ms of [5, 50, 500, 50]) yield* Metric.update(latency, ms)
      const sizes = Metric.summary({ name: `${p}size`, maxAge: "1 minute", maxSize: 100, error: 0.01, quantiles: [0.5, 0.9] })
      for (const size of [1, 2, 3, 4]) yield* Metric.update(sizes, size)
      yield* Metric.update(Metric.frequency(`${p}outcome`), "ok")
      yield* Metric.update(Metric.frequency(`${p}outcome`), "ok")
      yield* Metric.update(Metric.frequency(`${p}outcome`), "failed")
      yield* Metric.increment(Metric.tagged(Metric.counter(`${p}weird-name.total`), "bad-label", "x"))

      const text = page(p)
      const families = Object.fromEntries(parse(text).map((f) => [f.name, f]))
      expect(Object.keys(families).sort()).toEqual(
        ["in_flight", "latency_ms", "outcome", "requests_total", "size", "weird_name_total"].map((n) => p + n)
      )

      const counter = families[`${p}requests_total`]!
      expect(counter.type).toBe("COUNTER")
      // Escaped on the page, the help reads back as it was.
      expect(counter.help).toBe("Requests,\nby route \\ method")
      expect(counter.metrics).toEqual(expect.arrayContaining([
        { value: "3", labels: { route: "/jobs", method: "POST" } },
        { value: "1", labels: { route: "a \"quoted\"\nline \\ here" } }
      ]))
      expect(families[`${p}in_flight`]).toMatchObject({ type: "GAUGE", metrics: [{ value: "7" }] })

      const histogram = families[`${p}latency_ms`]!
      expect(histogram.type).toBe("HISTOGRAM")
      // Cumulative, with +Inf equal to the count.
      expect(histogram.metrics[0]).toEqual({ buckets: { "10": "1", "100": "3", "+Inf": "4" }, count: "4", sum: "605" })

      const summary = families[`${p}size`]!
      expect(summary.type).toBe("SUMMARY")
      expect(summary.metrics[0]).toMatchObject({ count: "4", sum: "10" })
      expect(Object.keys(summary.metrics[0]!.quantiles!)).toEqual(["0.5", "0.9"])

      expect(families[`${p}outcome`]!.metrics).toEqual(expect.arrayContaining([
        { value: "2", labels: { value: "ok" } },
        { value: "1", labels: { value: "failed" } }
      ]))
      expect(families[`${p}weird_name_total`]!.metrics).toEqual([{ value: "1", labels: { bad_label: "x" } }])
      // One TYPE line per name, every sample line after it.
      expect(text.split("\n").filter((l) => l.startsWith(`# TYPE ${p}requests_total `))).toHaveLength(1)
    }))

  it("an empty registry is an empty page", () => {
    expect(PrometheusText.render([])).toBe("")
  })
})
