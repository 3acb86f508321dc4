/**
 * A stand-in OpenTelemetry collector: a real HTTP server on a loopback port
 * that keeps every OTLP/HTTP JSON body posted to it, by path, and readers
 * for the spans and metrics in them.
 */
import { Effect } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

export interface OtlpValue {
  readonly stringValue?: string
  readonly intValue?: number | string
  readonly doubleValue?: number
  readonly boolValue?: boolean
}
export type OtlpAttributes = ReadonlyArray<{ readonly key: string, readonly value: OtlpValue }>
export interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly attributes: OtlpAttributes
}
export interface OtlpMetric {
  readonly name: string
  readonly sum?: {
    readonly dataPoints: ReadonlyArray<
      { readonly asDouble?: number, readonly asInt?: number | string, readonly attributes: OtlpAttributes }
    >
  }
}

export interface Collector {
  readonly url: string
  /** Bodies by path (`/v1/traces`, `/v1/metrics`), in the order they came. */
  readonly bodies: Map<string, Array<unknown>>
}

/** Listens until the scope ends. */
export const collector = Effect.acquireRelease(
  Effect.async<Collector & { readonly close: () => void }>((resume) => {
    const bodies = new Map<string, Array<unknown>>()
    const server = createServer((request, response) => {
      let text = ""
      request.on("data", (chunk) => (text += chunk))
      request.on("end", () => {
        const list = bodies.get(request.url ?? "") ?? []
        list.push(JSON.parse(text))
        bodies.set(request.url ?? "", list)
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies, close: () => server.close() })))
  }),
  (c) => Effect.sync(c.close)
)

export const spansOf = (collector: Collector): Array<OtlpSpan> =>
  (collector.bodies.get("/v1/traces") ?? []).flatMap((body) =>
    (body as { resourceSpans: ReadonlyArray<{ scopeSpans: ReadonlyArray<{ spans: ReadonlyArray<OtlpSpan> }> }> }).resourceSpans
      .flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)))

export const metricsOf = (collector: Collector): Array<OtlpMetric> =>
  (collector.bodies.get("/v1/metrics") ?? []).flatMap((body) =>
    (body as { resourceMetrics: ReadonlyArray<{ scopeMetrics: ReadonlyArray<{ metrics: ReadonlyArray<OtlpMetric> }> }> }).resourceMetrics
      .flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics)))

/** An attribute's value: a string, or a number. */
export const attribute = (of: { readonly attributes: OtlpAttributes }, key: string): string | number | undefined => {
  const value = of.attributes.find((a) => a.key === key)?.value
  return value?.stringValue ?? (value?.intValue === undefined ? value?.doubleValue : Number(value.intValue))
}
