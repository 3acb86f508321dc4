/**
 * The failure taxonomy of one attempt of a task, and the classifiers that map
 * whatever a task failed with onto it.
 *
 * The engine never looks at a task's own error type: it asks `classify` (or
 * the `classify` option of a batch) which class a failure belongs to, and the
 * class decides what happens next — `RateLimited` closes the rate limiter's
 * cooldown gate and waits its `retryAfter`, `Overloaded` and `Timeout` count as
 * drops for adaptive concurrency, `Transient` backs off, `Permanent` is never
 * retried, `QuotaExhausted` stops the whole batch.
 *
 * What it does not promise: classification reads status codes, headers and
 * provider error codes, never message text; a failure it does not recognise is
 * `Transient` (retried within the attempt budget). Defects are not failures and
 * are never classified or retried.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

const message = (text: string) => Schema.optionalWith(Schema.String, { default: () => text })
const RetryAfter = Schema.optional(Schema.DurationFromMillis)
const Status = Schema.optional(Schema.Number)
const Code = Schema.optional(Schema.String)

/**
 * The provider refused the call because a rate limit was hit (HTTP 429).
 * `retryAfter` is how long the provider asked us to wait, when it said.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  message: message("rate limited"),
  retryAfter: RetryAfter,
  status: Status,
  code: Code
}) {}

/**
 * The provider is over capacity (HTTP 529, `overloaded_error`, a 503 with a
 * retry-after). A drop for adaptive concurrency.
 *
 * @since 0.1.0
 * @category errors
 */
export class Overloaded extends Schema.TaggedError<Overloaded>()("Overloaded", {
  message: message("provider overloaded"),
  retryAfter: RetryAfter,
  status: Status,
  code: Code
}) {}

/**
 * A failure worth retrying: a 5xx, a dropped connection, anything unrecognised.
 *
 * @since 0.1.0
 * @category errors
 */
export class Transient extends Schema.TaggedError<Transient>()("Transient", {
  message: message("transient failure"),
  status: Status,
  code: Code,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * An attempt ran past its `timeout`, or an item past its `deadline`.
 *
 * @since 0.1.0
 * @category errors
 */
export class Timeout extends Schema.TaggedError<Timeout>()("Timeout", {
  message: message("timed out"),
  after: Schema.optional(Schema.DurationFromMillis),
  scope: Schema.optionalWith(Schema.Literal("attempt", "deadline", "provider"), { default: () => "attempt" })
}) {}

/**
 * A failure that will happen again however often it is retried: a 4xx other
 * than 408/429, a body that does not decode, a defect in the task.
 *
 * @since 0.1.0
 * @category errors
 */
export class Permanent extends Schema.TaggedError<Permanent>()("Permanent", {
  message: message("permanent failure"),
  status: Status,
  code: Code,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * The account has no quota left (`insufficient_quota`, billing limits). No
 * further call can succeed, so the batch stops admitting items.
 *
 * @since 0.1.0
 * @category errors
 */
export class QuotaExhausted extends Schema.TaggedError<QuotaExhausted>()("QuotaExhausted", {
  message: message("quota exhausted"),
  status: Status,
  code: Code
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export type TaskError = RateLimited | Overloaded | Transient | Timeout | Permanent | QuotaExhausted

/**
 * The schema of every class, for persisting failures or sending them over HTTP.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TaskError: Schema.Union<[
  typeof RateLimited,
  typeof Overloaded,
  typeof Transient,
  typeof Timeout,
  typeof Permanent,
  typeof QuotaExhausted
]> = Schema.Union(RateLimited, Overloaded, Transient, Timeout, Permanent, QuotaExhausted)

/**
 * @since 0.1.0
 * @category models
 */
export type Tag = TaskError["_tag"]

/**
 * Every class name, in a stable order (used by reports).
 *
 * @since 0.1.0
 * @category models
 */
export const tags: ReadonlyArray<Tag> = [
  "RateLimited",
  "Overloaded",
  "Transient",
  "Timeout",
  "Permanent",
  "QuotaExhausted"
]

const tagSet: ReadonlySet<string> = new Set(tags)

/**
 * @since 0.1.0
 * @category guards
 */
export const isTaskError = (u: unknown): u is TaskError =>
  u instanceof RateLimited || u instanceof Overloaded || u instanceof Transient || u instanceof Timeout ||
  u instanceof Permanent || u instanceof QuotaExhausted

/**
 * Failures that tell adaptive concurrency the provider is past its capacity.
 *
 * @since 0.1.0
 * @category guards
 */
export const isDrop = (tag: Tag): boolean => tag === "RateLimited" || tag === "Overloaded" || tag === "Timeout"

/**
 * Failures no retry can fix.
 *
 * @since 0.1.0
 * @category guards
 */
export const isFinal = (tag: Tag): boolean => tag === "Permanent" || tag === "QuotaExhausted"

/**
 * The `retryAfter` a failure carries, if any.
 *
 * @since 0.1.0
 * @category getters
 */
export const retryAfter = (error: TaskError): Duration.Duration | undefined =>
  error._tag === "RateLimited" || error._tag === "Overloaded" ? error.retryAfter : undefined

// ---------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------

/**
 * Anything that can answer a header lookup: a plain record (as `@effect/platform`
 * and Node give), or a WHATWG `Headers`.
 *
 * @since 0.1.0
 * @category models
 */
export type HeadersInput =
  | { readonly get: (name: string) => string | null }
  | Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

const headerReader = (headers: HeadersInput | undefined): (name: string) => string | undefined => {
  if (headers === undefined) return () => undefined
  if (typeof headers.get === "function") {
    const get = headers.get as (name: string) => string | null
    return (name) => get.call(headers, name) ?? undefined
  }
  const lower = new Map<string, string>()
  for (const [key, value] of Object.entries(headers as Record<string, unknown>)) {
    if (typeof value === "string") lower.set(key.toLowerCase(), value)
    else if (Array.isArray(value) && typeof value[0] === "string") lower.set(key.toLowerCase(), value[0])
  }
  return (name) => lower.get(name)
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * Parses the reset durations OpenAI-style providers send in
 * `x-ratelimit-reset-*` (`"1s"`, `"6m0s"`, `"20ms"`, `"1h2m3.5s"`), or a bare
 * number of seconds.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseResetDuration = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim()
  if (trimmed === "") return undefined
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Duration.millis(Math.ceil(Number(trimmed) * 1000))
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy
  let total = 0
  let consumed = 0
  for (const match of trimmed.matchAll(pattern)) {
    total += Number(match[1]) * durationUnits[match[2]!]!
    consumed += match[0].length
  }
  return consumed === trimmed.length && consumed > 0 ? Duration.millis(Math.ceil(total)) : undefined
}

/**
 * Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to
 * `nowMillis`). Negative or unparsable values give `undefined`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseRetryAfter = (text: string, nowMillis: number): Duration.Duration | undefined => {
  const trimmed = text.trim()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Duration.millis(Math.ceil(Number(trimmed) * 1000))
  const date = Date.parse(trimmed)
  if (Number.isNaN(date)) return undefined
  return Duration.millis(Math.max(0, date - nowMillis))
}

/**
 * Reads how long the provider asked us to wait: `retry-after-ms`, then
 * `retry-after`, then the `x-ratelimit-reset-*` of whichever limit has nothing
 * remaining.
 *
 * @since 0.1.0
 * @category parsing
 */
export const retryAfterFromHeaders = (
  headers: HeadersInput | undefined,
  nowMillis: number = Date.now()
): Duration.Duration | undefined => {
  const header = headerReader(headers)
  const ms = header("retry-after-ms")
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms.trim())) return Duration.millis(Math.ceil(Number(ms)))
  const ra = header("retry-after")
  if (ra !== undefined) {
    const parsed = parseRetryAfter(ra, nowMillis)
    if (parsed !== undefined) return parsed
  }
  let longest: Duration.Duration | undefined
  for (const kind of ["requests", "tokens"]) {
    const remaining = header(`x-ratelimit-remaining-${kind}`)
    const reset = header(`x-ratelimit-reset-${kind}`)
    if (reset === undefined || (remaining !== undefined && Number(remaining) > 0)) continue
    const parsed = parseResetDuration(reset)
    if (parsed !== undefined && (longest === undefined || Duration.greaterThan(parsed, longest))) longest = parsed
  }
  return longest
}

const quotaCodes = new Set(["insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "quota_exceeded"])
const overloadCodes = new Set(["overloaded", "overloaded_error", "server_overloaded", "engine_overloaded"])
const rateLimitCodes = new Set(["rate_limit_exceeded", "rate_limit_error", "requests_limit_exceeded"])

/**
 * Finds a provider error code in a response body: `{ error: { code | type } }`
 * (OpenAI, Anthropic), `{ code }`, or the same as JSON text.
 *
 * @since 0.1.0
 * @category parsing
 */
export const errorCodeFromBody = (body: unknown): string | undefined => {
  let value = body
  if (typeof value === "string") {
    try {
      value = JSON.parse(value)
    } catch {
      return undefined
    }
  }
  if (!Predicate.isRecord(value)) return undefined
  const error = value["error"]
  if (Predicate.isRecord(error)) {
    if (typeof error["code"] === "string") return error["code"]
    if (typeof error["type"] === "string") return error["type"]
  }
  if (typeof value["code"] === "string") return value["code"]
  if (typeof value["type"] === "string" && value["type"] !== "error") return value["type"]
  return undefined
}

const bodyMessage = (body: unknown): string | undefined => {
  let value = body
  if (typeof value === "string") {
    try {
      value = JSON.parse(value)
    } catch {
      return value === "" ? undefined : (value as string).slice(0, 500)
    }
  }
  if (!Predicate.isRecord(value)) return undefined
  const error = value["error"]
  if (Predicate.isRecord(error) && typeof error["message"] === "string") return error["message"]
  if (typeof error === "string") return error
  return typeof value["message"] === "string" ? value["message"] : undefined
}

/**
 * Classifies a failed HTTP response from its status, headers and body.
 *
 * - 429 → `RateLimited` (with `retryAfter` from the headers), or
 *   `QuotaExhausted` when the body's code says the quota is spent;
 * - 529, an overload code, or a 503 that says when to come back (a wait in
 *   its headers) → `Overloaded`; 408 and 504 → `Timeout`;
 * - other 5xx (a bare 503 too: without an overload signal it is a server
 *   error like a 500 or 502, not a sign of load) and 425 → `Transient`;
 *   other 4xx → `Permanent`;
 * - status 0 (or anything below 100: no response came, as browsers' and some
 *   clients' network errors report it) → `Transient`.
 *
 * `options.retryAfter` is a wait known otherwise (a field of an SDK's error),
 * used when the headers name none.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromHttpResponse = (
  status: number,
  headers?: HeadersInput,
  body?: unknown,
  options?: {
    readonly nowMillis?: number | undefined
    readonly retryAfter?: Duration.DurationInput | undefined
  }
): TaskError => {
  const code = errorCodeFromBody(body)
  const detail = bodyMessage(body)
  const text = (fallback: string) => `HTTP ${status}: ${detail ?? fallback}`
  const common = code === undefined ? { status } : { status, code }
  const waitFor = () =>
    retryAfterFromHeaders(headers, options?.nowMillis) ??
      (options?.retryAfter === undefined ? undefined : Duration.decode(options.retryAfter))
  const withRetryAfter = () => {
    const after = waitFor()
    return after === undefined ? common : { ...common, retryAfter: after }
  }
  if (code !== undefined && quotaCodes.has(code)) {
    return new QuotaExhausted({ ...common, message: text("quota exhausted") })
  }
  if (status === 429 || (code !== undefined && rateLimitCodes.has(code))) {
    return new RateLimited({ ...withRetryAfter(), message: text("rate limited") })
  }
  if (status === 529 || (code !== undefined && overloadCodes.has(code)) || (status === 503 && waitFor() !== undefined)) {
    return new Overloaded({ ...withRetryAfter(), message: text("overloaded") })
  }
  if (!(status >= 100)) {
    return new Transient({ ...common, message: `no HTTP response (status ${status}): ${detail ?? "network error"}` })
  }
  if (status === 408 || status === 504) {
    return new Timeout({ message: text("timed out"), scope: "provider" })
  }
  if (status === 425) return new Transient({ ...common, message: text("too early") })
  if (status === 503) return new Transient({ ...common, message: text("service unavailable") })
  if (status >= 500) return new Transient({ ...common, message: text("server error") })
  if (status >= 400) return new Permanent({ ...common, message: text("request rejected") })
  return new Permanent({ ...common, message: `unexpected HTTP ${status} treated as a failure` })
}

/**
 * Classifies a failure known by its status, for errors that did not come
 * through an HTTP client's response (an SDK's error, a queue's message): as
 * `fromHttpResponse`, with the wait (`retryAfterMs`) and the provider's error
 * `code` given as they are. `message` replaces the default text after
 * `HTTP <status>: `.
 *
 * @example
 * ```ts
 * TaskError.fromStatus({ status: 429, retryAfterMs: 1200 }) // RateLimited, retryAfter 1.2 s
 * TaskError.fromStatus({ status: 0, message: "socket hang up" }) // Transient
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromStatus = (failure: {
  readonly status: number
  readonly retryAfterMs?: number | undefined
  readonly code?: string | undefined
  readonly message?: string | undefined
  readonly headers?: HeadersInput | undefined
}): TaskError => {
  const { code, message } = failure
  const body = code === undefined && message === undefined
    ? undefined
    : { error: { ...(code === undefined ? {} : { code }), ...(message === undefined ? {} : { message }) } }
  const retryAfterMs = failure.retryAfterMs
  return fromHttpResponse(failure.status, failure.headers, body, {
    retryAfter: retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs >= 0 ? Duration.millis(retryAfterMs) : undefined
  })
}

// ---------------------------------------------------------------------------
// classify
// ---------------------------------------------------------------------------

const transientNetworkCodes = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT"
])

const statusOf = (u: Record<PropertyKey, unknown>): number | undefined => {
  const status = u["status"] ?? u["statusCode"]
  return typeof status === "number" && status >= 100 && status < 600 ? status : undefined
}

/**
 * A wait an error carries as a field rather than in headers: `retryAfterMs` /
 * `retry_after_ms` (milliseconds), or `retryAfter` / `retry_after` (a
 * `Duration`, a number of seconds as the header has it, or the header's text).
 */
const retryAfterField = (u: Record<PropertyKey, unknown>): Duration.Duration | undefined => {
  const ms = u["retryAfterMs"] ?? u["retry_after_ms"]
  if (typeof ms === "number" && Number.isFinite(ms) && ms >= 0) return Duration.millis(Math.ceil(ms))
  const after = u["retryAfter"] ?? u["retry_after"]
  if (Duration.isDuration(after)) return after
  if (typeof after === "number" && Number.isFinite(after) && after >= 0) return Duration.millis(Math.ceil(after * 1000))
  if (typeof after === "string") return parseRetryAfter(after, Date.now())
  return undefined
}

/**
 * Maps any failure onto the taxonomy:
 *
 * - a `TaskError` is itself;
 * - a value tagged like a `TaskError` (e.g. decoded from JSON) is rebuilt;
 * - `@effect/platform`'s `ResponseError` (and any object with an HTTP `status`
 *   and `headers`, such as the OpenAI SDK's `APIError`) goes through
 *   `fromHttpResponse`, with a wait given as a field (`retryAfterMs`,
 *   `retryAfter`) when the headers name none; its `RequestError` is
 *   `Transient`;
 * - `TimeoutException` is `Timeout`; Node network error codes are `Transient`;
 * - anything else is `Transient`, carrying the original as `cause`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const classify = (u: unknown): TaskError => {
  if (isTaskError(u)) return u
  if (Cause.isTimeoutException(u)) return new Timeout({ message: u.message || "timed out" })
  if (Predicate.isRecord(u) || u instanceof Error) {
    const record = u as Record<PropertyKey, unknown>
    const tag = record["_tag"]
    if (typeof tag === "string" && tagSet.has(tag)) {
      const decoded = Schema.decodeUnknownEither(TaskError)(u)
      if (decoded._tag === "Right") return decoded.right
    }
    const response = record["response"]
    if (Predicate.isRecord(response)) {
      const status = statusOf(response)
      if (status !== undefined) {
        return fromHttpResponse(status, response["headers"] as HeadersInput | undefined, record["body"] ?? record["error"], {
          retryAfter: retryAfterField(record)
        })
      }
    }
    if (tag === "RequestError") return new Transient({ message: String(record["message"] ?? "request failed"), cause: u })
    const status = statusOf(record)
    if (status !== undefined) {
      const body = record["error"] ?? record["body"] ?? (typeof record["code"] === "string" ? { code: record["code"] } : undefined)
      return fromHttpResponse(status, record["headers"] as HeadersInput | undefined, body, { retryAfter: retryAfterField(record) })
    }
    const code = record["code"]
    if (typeof code === "string" && transientNetworkCodes.has(code)) {
      return new Transient({ message: `network error ${code}`, code, cause: u })
    }
  }
  return new Transient({ message: "unclassified failure", cause: u })
}
