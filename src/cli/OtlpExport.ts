/**
 * `--otlp URL`: a command's traces and metrics sent to an OpenTelemetry
 * collector over OTLP/HTTP with JSON bodies (`URL/v1/traces`,
 * `URL/v1/metrics`), through `@effect/opentelemetry`'s exporters, which need
 * no OpenTelemetry SDK. That package is an optional peer, loaded only when
 * asked for; without it the command stops with a usage error saying how to
 * install it.
 *
 * Without `--otlp`, a command makes no spans at all (`untraced`): nothing
 * would read them. Its metrics are kept (`/metrics`, the run's summary).
 *
 * What it does not promise: logs are not exported (they stay on the
 * terminal); what is still buffered when the command ends is sent then,
 * within the exporter's shutdown timeout, and lost if the collector does not
 * answer by then.
 *
 * @since 0.2.0
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { UsageError } from "./CliError.js"

const peer = "@effect/opentelemetry@0.64.1"

const load = Effect.tryPromise({
  try: () =>
    Promise.all([
      import("@effect/opentelemetry/OtlpTracer"),
      import("@effect/opentelemetry/OtlpMetrics"),
      import("@effect/opentelemetry/OtlpSerialization")
    ]),
  catch: () => new UsageError({ message: `--otlp needs the package @effect/opentelemetry, which is not installed: npm i ${peer}` })
})

/**
 * The exporters for `url` (the collector's base, e.g. `http://127.0.0.1:4318`),
 * as a layer to provide around what should be traced; or a usage error naming
 * a URL that is not http(s).
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (
  url: string,
  serviceName: string
): Effect.Effect<Layer.Layer<never, never, HttpClient.HttpClient>, UsageError> =>
  Effect.gen(function*() {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return yield* new UsageError({ message: `--otlp ${url}: not a URL (expected the collector's, e.g. http://127.0.0.1:4318)` })
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      return yield* new UsageError({ message: `--otlp ${url}: expected an http or https URL (OTLP over HTTP), got ${parsed.protocol}` })
    }
    const [OtlpTracer, OtlpMetrics, OtlpSerialization] = yield* load
    const base = url.replace(/\/+$/, "")
    const resource = { serviceName }
    return Layer.mergeAll(
      OtlpTracer.layer({ url: `${base}/v1/traces`, resource }),
      OtlpMetrics.layer({ url: `${base}/v1/metrics`, resource })
    ).pipe(Layer.provide(OtlpSerialization.layerJson))
  })

/**
 * No spans: what a command runs under without `--otlp`. Effect's default tracer keeps its spans nowhere, yet
 * making them cost: a span per HTTP call with every request and response header as an attribute, one per SQL
 * statement, per request and per chunk. Left on, they were about a sixth of the job service's fiber steps per
 * item and an eighth of its scavenges (jobs bench, `--count`: run L 216 → 183 steps and 114 → 99 scavenges).
 *
 * @since 0.2.0
 * @category layers
 */
export const untraced: Layer.Layer<never> = Layer.setTracerEnabled(false)

/**
 * `layer` for `url`, or `untraced` without one.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerOrUntraced = (
  url: string | undefined,
  serviceName: string
): Effect.Effect<Layer.Layer<never, never, HttpClient.HttpClient>, UsageError> =>
  url === undefined ? Effect.succeed(untraced) : layer(url, serviceName)
