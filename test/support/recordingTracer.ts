/** A tracer that keeps every span the native one makes, to read a span tree back in a test. */
import { Effect, Tracer } from "effect"

export const recording = Effect.map(Effect.tracer, (native) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      spans.push(span)
      return span
    },
    context: native.context
  })
  return { spans, tracer }
})

/** A native span's events: `[name, at (ns), attributes]`. */
export const eventsOf = (span: Tracer.Span) =>
  (span as unknown as { readonly events: ReadonlyArray<readonly [string, bigint, Record<string, unknown>]> }).events
