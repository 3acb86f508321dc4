/**
 * What the batch providers (`OpenAiBatch`, `AnthropicBatch`) share of HTTP:
 * a request sent with the provider's headers, its 2xx body as text or a
 * `BatchApiError` naming the operation, the status and the provider's
 * message; transient failures (no answer, 429, 5xx) retried 5 times from
 * 1 s, doubling; answers decoded with a schema; results JSONL read line by
 * line into outcomes.
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { BatchApiError } from "../BatchProvider.js"
import type { LineOutcome } from "./batchOutcomes.js"

type Operation = BatchApiError["operation"]

const retryable = (error: BatchApiError) => error.status === undefined || error.status === 429 || error.status >= 500

const transientRetry = Schedule.exponential("1 second").pipe(Schedule.intersect(Schedule.recurs(5)))

/** The provider's own message, from its JSON error body (`{error: {message}}`), else the start of the text. */
const messageOf = (text: string): string => {
  try {
    const parsed = JSON.parse(text) as { error?: { message?: unknown } } | null
    if (typeof parsed?.error?.message === "string") return parsed.error.message
  } catch {
    // Not JSON: the text itself.
  }
  return text.slice(0, 300) || "(empty body)"
}

/** Sends requests with `headers` on `client`: a 2xx answer's body as text, else a `BatchApiError`. */
export const sender = (client: HttpClient.HttpClient, headers: Readonly<Record<string, string>>) =>
  (operation: Operation, request: HttpClientRequest.HttpClientRequest): Effect.Effect<string, BatchApiError> =>
    client.execute(HttpClientRequest.setHeaders(request, headers)).pipe(
      Effect.mapError((cause) => new BatchApiError({ operation, detail: cause.message })),
      Effect.flatMap((response) =>
        Effect.flatMap(
          Effect.mapError(response.text, (cause) => new BatchApiError({ operation, detail: cause.message })),
          (text) =>
            response.status >= 200 && response.status < 300
              ? Effect.succeed(text)
              : Effect.fail(new BatchApiError({ operation, status: response.status, detail: messageOf(text) }))
        )
      ),
      Effect.scoped,
      Effect.retry({ schedule: transientRetry, while: retryable })
    )

/** A cancel that found the batch already ended (409, or 400): nothing was left to cancel, which is no failure. */
export const toleratingEnded = (cancel: Effect.Effect<string, BatchApiError>): Effect.Effect<void, BatchApiError> =>
  cancel.pipe(
    Effect.catchIf((error) => error.status === 409 || error.status === 400, () => Effect.succeed("")),
    Effect.asVoid
  )

/** Decodes an answer's JSON text with `schema`, or fails naming `operation`. */
export const decoder = <A, I>(schema: Schema.Schema<A, I>, operation: Operation) => {
  const decodeJson = Schema.decodeUnknown(Schema.parseJson(schema))
  return (text: string): Effect.Effect<A, BatchApiError> =>
    Effect.mapError(decodeJson(text), (error) => new BatchApiError({ operation, detail: `unexpected answer: ${error.message.split("\n")[0]}` }))
}

/** Every non-blank line of a results file, given its meaning by `meaningOf`; a line that is not JSON is `Malformed`. */
export const outcomesOf = (text: string, meaningOf: (line: unknown) => LineOutcome): Array<LineOutcome> =>
  text.split("\n").filter((line) => line.trim() !== "").map((line) => {
    try {
      return meaningOf(JSON.parse(line))
    } catch {
      return { _tag: "Malformed" as const, message: `not JSON: ${line.slice(0, 120)}` }
    }
  })
