/**
 * See inside a run: where the items' time went, metrics and traces.
 *
 * A batch of 40 calls at concurrency 8 under a limit of 20 requests a second,
 * with a provider that fails a call in ten once.
 *
 * 1. The report says where the items' time went and what held the batch
 *    back (`BatchReport.timeSpent`, `BatchReport.verdict`): here, the rate
 *    limit.
 * 2. `metrics: true` records `BatchMetrics` in Effect's registry, labelled
 *    with the batch's `name` and the caller's metric labels;
 *    `PrometheusText` renders the registry for a `/metrics` endpoint.
 * 3. `spans: true` puts an `effect-batch.item` span per item and an
 *    `effect-batch.attempt` span per attempt on Effect's tracer. With
 *    `OTEL_EXPORTER_OTLP_ENDPOINT` set (a collector, e.g.
 *    `http://127.0.0.1:4318`), `@effect/opentelemetry`'s OTLP exporters send
 *    the traces and metrics there; without it, the spans are only counted.
 */
import { NodeHttpClient } from "@effect/platform-node"
import * as OtlpMetrics from "@effect/opentelemetry/OtlpMetrics"
import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import { Console, Effect, Layer, Tracer } from "effect"
import { Batch, BatchMetrics, BatchReport, PrometheusText, RateLimiter, TaskError } from "effect-batch"

// A provider: 50 ms a call, every tenth call fails once with a 503.
const failedOnce = new Set<number>()
const call = (prompt: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep("50 millis")
    if (prompt % 10 === 3 && !failedOnce.has(prompt)) {
      failedOnce.add(prompt)
      return yield* new TaskError.Transient({ message: `prompt ${prompt}: 503`, status: 503 })
    }
    return `answer ${prompt}`
  })

// Traces and metrics to an OpenTelemetry collector at `endpoint`, over OTLP/HTTP with JSON bodies.
const otlp = (endpoint: string) =>
  Layer.mergeAll(
    OtlpTracer.layer({ url: `${endpoint}/v1/traces`, resource: { serviceName: "example" } }),
    OtlpMetrics.layer({ url: `${endpoint}/v1/metrics`, resource: { serviceName: "example" } })
  ).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(NodeHttpClient.layerUndici))

// The OTLP exporters when a collector is named; without one, a tracer that only counts the spans it is given.
const endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT
let spans = 0
const telemetry = endpoint === undefined
  ? Layer.unwrapEffect(Effect.map(Effect.tracer, (native) =>
      Layer.setTracer(Tracer.make({
        span: (...args) => {
          spans++
          return native.span(...args)
        },
        context: native.context
      }))))
  : otlp(endpoint)

const program = Effect.gen(function*() {
  const { report } = yield* Batch.run(Array.from({ length: 40 }, (_, i) => i), call, {
    concurrency: 8,
    spans: true,
    metrics: true,
    name: "example"
  }).pipe(
    Effect.provide(RateLimiter.layer({ requestsPerSecond: 20 })),
    BatchMetrics.withLabels({ profile: "demo" }),
    Effect.withSpan("example.run")
  )

  // 1. Where the time went.
  yield* Console.log(BatchReport.format(report))
  yield* Console.log(`\nheld back by: ${BatchReport.verdict(report)}`)

  // 2. The batch's metrics as Prometheus reads them (a few lines of the page).
  const page = yield* PrometheusText.snapshot
  const lines = page.split("\n").filter((line) => line.startsWith("effect_batch_items_total") || line.startsWith("effect_batch_time_spent"))
  yield* Console.log(`\n${lines.join("\n")}`)

  // 3. The spans.
  if (endpoint === undefined) yield* Console.log(`\n${spans} spans made (set OTEL_EXPORTER_OTLP_ENDPOINT to send them)`)
  else yield* Console.log(`\ntraces and metrics sent to ${endpoint}`)
})

Effect.runPromise(Effect.provide(program, telemetry))
