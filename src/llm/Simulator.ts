/**
 * A simulated OpenAI-compatible provider, served over HTTP by `@effect/platform`,
 * for tests, examples and benchmarks: `POST /v1/chat/completions`,
 * `POST /v1/embeddings`, `GET /v1/models`, plus `GET /metrics` and `POST /reset`,
 * and the batch APIs of OpenAI (`/v1/files`, `/v1/batches`) and Anthropic
 * (`/v1/messages/batches`; see `batches` in `Options`), whose batches run on
 * the same clock and answer each line as the live endpoint would.
 *
 * Each API request goes through the checks a real provider makes, in this
 * order: API key (401) → body (400 `invalid_request_error`) → quota (429
 * `insufficient_quota`) → rate limits (429 `rate_limit_exceeded`, with
 * `retry-after`, `retry-after-ms` and `x-ratelimit-*` headers) → content
 * (400 `invalid_prompt` for any input containing `INVALID`) → capacity (a FIFO
 * queue for a free slot, or 503 `overloaded` when the queue is full) → service
 * time → a drawn transient failure (500, 502 or 503 `server_error`) → 200.
 * Every answer says, as OpenAI's do, how long it took from arrival, waiting
 * for a slot included (`openai-processing-ms`).
 * Rate limits are continuous-refill token buckets holding `bucketMs` of rate;
 * tokens are charged at admission as prompt tokens + `max_tokens` (or the
 * completion it will produce), as OpenAI does, and never refunded.
 *
 * Deterministic for a seed: what derives from a prompt (completion length,
 * answer text, embedding) is a function of (seed, model, input) alone. Jitter
 * and failure draws come from one seeded PRNG in arrival order, so they repeat
 * only when requests arrive in the same order. Time is Effect's `Clock`.
 *
 * What it does not promise: tokens are counted as ⌈characters / 4⌉, not by a
 * tokenizer; there is no streaming (`stream: true` is a 400), no tools and no
 * `n`; the `x-ratelimit-*` values are those at admission; quota is checked at
 * admission, so requests already admitted may spend past it. Latencies are as
 * exact as the runtime's timers (about a millisecond on Node). The metrics
 * timeline keeps one entry per active 100 ms until `reset`.
 *
 * @since 0.1.0
 */
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as batchSurface from "./internal/simulatorBatches.js"
import * as model from "./internal/simulatorModel.js"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Latency {
  /** Service time of every request, in ms. Default `50`, ≥ 0. */
  readonly baseMs?: number | undefined
  /** Added per completion token, in ms. Default `0`, ≥ 0. */
  readonly perOutputTokenMs?: number | undefined
  /**
   * σ of the lognormal multiplier exp(σ·N(0,1) − σ²/2) applied to the service
   * time (mean 1). Default `0` (exact), between 0 and 4.
   */
  readonly jitter?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface OutputTokens {
  /** Fewest completion tokens an answer has. Default `10`, an integer ≥ 1. */
  readonly min?: number | undefined
  /** Most completion tokens an answer has. Default `60` (or `min`, if larger), an integer ≥ `min`. */
  readonly max?: number | undefined
}

/**
 * Every option is optional. In `configure`, a key given as `undefined` goes
 * back to its default; `Infinity` means unlimited wherever unlimited is the
 * default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Seed of the PRNG and of every per-prompt draw (used modulo 2³²). Default `42`, a safe integer. */
  readonly seed?: number | undefined
  /** Service time. Default `{ baseMs: 50, perOutputTokenMs: 0, jitter: 0 }`. */
  readonly latency?: Latency | undefined
  /** Completion length, drawn per prompt and capped by `max_tokens`. Default `{ min: 10, max: 60 }`. */
  readonly outputTokens?: OutputTokens | undefined
  /** Requests served at once; the rest wait in a FIFO queue. Default unlimited, an integer ≥ 1. */
  readonly capacity?: number | undefined
  /** Requests that may wait for a slot; one more gets a 503 `overloaded` at once. Default unlimited, an integer ≥ 0. */
  readonly maxQueue?: number | undefined
  /** Requests per minute. Default unlimited, > 0. */
  readonly requestsPerMinute?: number | undefined
  /** Tokens per minute, charged at admission. Default unlimited, > 0. */
  readonly tokensPerMinute?: number | undefined
  /**
   * How much rate each bucket holds, in ms (600 RPM with `1000` holds 10
   * requests; with `100`, 1). Buckets start full and refill continuously.
   * Default `1000`, > 0.
   */
  readonly bucketMs?: number | undefined
  /**
   * Whether answers carry the `x-ratelimit-*` headers. Without them a client
   * learns of the limits only from 429s (which still carry `retry-after` and
   * `retry-after-ms`), as with a provider that sends none. Default `true`.
   */
  readonly rateLimitHeaders?: boolean | undefined
  /** Probability that a served request fails with 500, 502 or 503. Default `0`, between 0 and 1. */
  readonly failureRate?: number | undefined
  /** Tokens (prompt + completion) the account may spend before every request gets `insufficient_quota`. Default unlimited, ≥ 0. */
  readonly quotaTokens?: number | undefined
  /**
   * When set, `/v1/*` requests must carry `Authorization: Bearer <apiKey>`
   * (`/metrics` and `/reset` never ask). Default none, a non-empty string.
   */
  readonly apiKey?: string | undefined
  /** What `GET /v1/models` lists (requests may name any model). Default `["sim-chat", "sim-embed"]`. */
  readonly models?: ReadonlyArray<string> | undefined
  /**
   * The Batch API's timing, limits and faults: `validateMs` (1 000),
   * `linesPerSecond` (100), `finalizeMs` (1 000), `cancelMs` (2 000),
   * `windowMs` (24 h), `fileProcessingMs` (200), `maxRequests` (50 000),
   * `maxBytes` (200 MB), `enqueuedTokens` per model (unlimited),
   * `lineFailureRate` (0), `nullOutputPolls` (0).
   */
  readonly batches?: BatchOptions | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export type BatchOptions = batchSurface.Options

/**
 * @since 0.1.0
 * @category models
 */
export type BatchMetrics = batchSurface.Metrics

/**
 * One 100 ms slice of the run.
 *
 * @since 0.1.0
 * @category models
 */
export interface TimelineEntry {
  /** Start of the slice, in ms since the simulator started or was reset. */
  readonly t: number
  readonly received: number
  /** Requests answered in the slice, whatever their status. */
  readonly completed: number
  readonly byStatus: Readonly<Record<string, number>>
  /** Most requests being served (holding a slot) at once in the slice. */
  readonly peakInFlight: number
}

/**
 * Counts since the simulator started or was reset, over the API endpoints
 * (`/v1/chat/completions`, `/v1/embeddings`). A request whose client went away
 * before its answer counts under status `"499"`, so `received` = the sum of
 * `byStatus` + `inFlight` + `queued` when no request spans a reset.
 *
 * @since 0.1.0
 * @category models
 */
export interface Metrics {
  readonly received: number
  readonly byStatus: Readonly<Record<string, number>>
  /** Requests being served now (holding a slot). */
  readonly inFlight: number
  readonly peakInFlight: number
  /** Requests waiting for a slot now. */
  readonly queued: number
  readonly peakQueued: number
  /** Tokens of the 200 answers. */
  readonly promptTokens: number
  readonly completionTokens: number
  /** Contiguous 100 ms slices, from the start to the last slice in which anything happened. */
  readonly timeline: ReadonlyArray<TimelineEntry>
  /** The Batch API: files uploaded, batches created, lines billed, `custom_id`s billed more than once. */
  readonly batches: BatchMetrics
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** `http://127.0.0.1:PORT`; the OpenAI base URL is `${url}/v1`. */
  readonly url: string
  readonly metrics: Effect.Effect<Metrics>
  /** Clears the metrics, refills the buckets, forgets the quota spent and reseeds the PRNG. */
  readonly reset: Effect.Effect<void>
  /** Changes options while serving; dies if the result is invalid (and then changes nothing). */
  readonly configure: (patch: Partial<Options>) => Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Simulator extends Context.Tag("effect-batch/Simulator")<Simulator, Service>() {}

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

interface Resolved {
  readonly seed: number
  readonly baseMs: number
  readonly perOutputTokenMs: number
  readonly jitter: number
  readonly minOutputTokens: number
  readonly maxOutputTokens: number
  readonly capacity: number
  readonly maxQueue: number
  readonly requestsPerMinute: number
  readonly tokensPerMinute: number
  readonly bucketMs: number
  readonly rateLimitHeaders: boolean
  readonly failureRate: number
  readonly quotaTokens: number
  readonly apiKey: string | undefined
  readonly models: ReadonlyArray<string>
  readonly batches: Exclude<ReturnType<typeof batchSurface.resolve>, string>
}

const invalid = (what: string): never => {
  throw new Cause.IllegalArgumentException(`Simulator: ${what}`)
}

const number = (
  name: string,
  value: number | undefined,
  fallback: number,
  ok: (v: number) => boolean,
  expected: string
): number => {
  const v = value ?? fallback
  if (typeof v !== "number" || !ok(v)) invalid(`${name} must be ${expected}, got ${v}`)
  return v
}

const atLeast = (min: number) => (v: number) => Number.isFinite(v) && v >= min
const integerAtLeast = (min: number) => (v: number) => Number.isInteger(v) && v >= min
const countOrUnlimited = (min: number) => (v: number) => v === Infinity || integerAtLeast(min)(v)

const resolve = (options: Options): Resolved => {
  const latency = options.latency ?? {}
  const output = options.outputTokens ?? {}
  const minOutputTokens = number("outputTokens.min", output.min, 10, integerAtLeast(1), "an integer ≥ 1")
  const maxOutputTokens = number(
    "outputTokens.max",
    output.max,
    Math.max(60, minOutputTokens),
    integerAtLeast(minOutputTokens),
    `an integer ≥ outputTokens.min (${minOutputTokens})`
  )
  const rateLimitHeaders = options.rateLimitHeaders ?? true
  if (typeof rateLimitHeaders !== "boolean") invalid(`rateLimitHeaders must be true or false, got ${String(rateLimitHeaders)}`)
  const apiKey = options.apiKey
  if (apiKey !== undefined && (typeof apiKey !== "string" || apiKey === "")) invalid("apiKey must be a non-empty string")
  const models = options.models ?? ["sim-chat", "sim-embed"]
  if (!Array.isArray(models) || models.some((m) => typeof m !== "string" || m === "")) {
    invalid("models must be an array of non-empty strings")
  }
  const batches = batchSurface.resolve(options.batches)
  if (typeof batches === "string") invalid(batches)
  return {
    batches: batches as Exclude<typeof batches, string>,
    seed: number("seed", options.seed, 42, Number.isSafeInteger, "a safe integer"),
    baseMs: number("latency.baseMs", latency.baseMs, 50, atLeast(0), "a finite number ≥ 0"),
    perOutputTokenMs: number("latency.perOutputTokenMs", latency.perOutputTokenMs, 0, atLeast(0), "a finite number ≥ 0"),
    jitter: number("latency.jitter", latency.jitter, 0, (v) => v >= 0 && v <= 4, "between 0 and 4"),
    minOutputTokens,
    maxOutputTokens,
    capacity: number("capacity", options.capacity, Infinity, countOrUnlimited(1), "an integer ≥ 1 or Infinity"),
    maxQueue: number("maxQueue", options.maxQueue, Infinity, countOrUnlimited(0), "an integer ≥ 0 or Infinity"),
    requestsPerMinute: number("requestsPerMinute", options.requestsPerMinute, Infinity, (v) => v > 0, "a number > 0 or Infinity"),
    tokensPerMinute: number("tokensPerMinute", options.tokensPerMinute, Infinity, (v) => v > 0, "a number > 0 or Infinity"),
    bucketMs: number("bucketMs", options.bucketMs, 1000, (v) => Number.isFinite(v) && v > 0, "a finite number > 0"),
    rateLimitHeaders,
    failureRate: number("failureRate", options.failureRate, 0, (v) => v >= 0 && v <= 1, "between 0 and 1"),
    quotaTokens: number("quotaTokens", options.quotaTokens, Infinity, (v) => v >= 0, "a number ≥ 0 or Infinity"),
    apiKey,
    models
  }
}

/** `patch` over `base`; the nested `latency` and `outputTokens` are merged field by field. */
const merge = (base: Options, patch: Partial<Options>): Options => ({
  ...base,
  ...patch,
  latency: "latency" in patch ? patch.latency && { ...base.latency, ...patch.latency } : base.latency,
  batches: "batches" in patch ? patch.batches && { ...base.batches, ...patch.batches } : base.batches,
  outputTokens: "outputTokens" in patch ? patch.outputTokens && { ...base.outputTokens, ...patch.outputTokens } : base.outputTokens
})

// ---------------------------------------------------------------------------
// request bodies
// ---------------------------------------------------------------------------

const PositiveInt = Schema.Int.pipe(Schema.greaterThanOrEqualTo(1))

const ContentPart = Schema.Struct({ type: Schema.String, text: Schema.optional(Schema.String) })

const ChatRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.NonEmptyArray(Schema.Struct({
    role: Schema.String,
    content: Schema.optional(Schema.NullOr(Schema.Union(Schema.String, Schema.Array(ContentPart))))
  })),
  max_tokens: Schema.optional(Schema.NullOr(PositiveInt)),
  max_completion_tokens: Schema.optional(Schema.NullOr(PositiveInt)),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean))
})

const EmbeddingsRequest = Schema.Struct({
  model: Schema.String,
  input: Schema.Union(Schema.String, Schema.NonEmptyArray(Schema.String)),
  dimensions: Schema.optional(PositiveInt.pipe(Schema.lessThanOrEqualTo(4096))),
  encoding_format: Schema.optional(Schema.Literal("float", "base64"))
})

const decodeChat = Schema.decodeUnknownEither(ChatRequest)
const decodeEmbeddings = Schema.decodeUnknownEither(EmbeddingsRequest)

const textOf = (content: typeof ChatRequest.Type["messages"][number]["content"]): string => {
  if (content === undefined || content === null) return ""
  if (typeof content === "string") return content
  let text = ""
  for (const part of content) if (part.text !== undefined) text += part.text
  return text
}

/** What the pipeline needs to know about a decoded request, before it is served. */
interface Job {
  readonly model: string
  readonly promptTokens: number
  readonly completionTokens: number
  /** Tokens charged against `tokensPerMinute` at admission. */
  readonly charge: number
  /** Whether any input contains `INVALID`. */
  readonly flagged: boolean
  readonly body: (created: number) => unknown
}

// ---------------------------------------------------------------------------
// responses
// ---------------------------------------------------------------------------

type HeaderRecord = Record<string, string>

const errorBody = (message: string, type: string, code: string) => ({ error: { message, type, code } })

const transientErrors: ReadonlyArray<readonly [number, string]> = [
  [500, "The server had an error while processing your request. Sorry about that!"],
  [502, "Bad gateway: the upstream server returned an invalid response."],
  // Not "overloaded": this 503 is a transient server error, unlike the queue's 503.
  [503, "The service is temporarily unavailable. Please retry your request."]
]

const unauthorizedBody = errorBody("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

const modelsCreated = 1_700_000_000

// ---------------------------------------------------------------------------
// state
// ---------------------------------------------------------------------------

interface Call {
  readonly epoch: number
  readonly id: string
  /** Clock millis at arrival: `openai-processing-ms` counts from here. */
  readonly arrivedAt: number
  answered: boolean
}

/** A request's place at the service: holding a slot (`granted`), or queued for one. */
interface Ticket {
  granted: boolean
  left: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
}

interface Slice {
  readonly t: number
  received: number
  completed: number
  readonly byStatus: Record<string, number>
  peakInFlight: number
  /** In-flight count when the slice's last event happened, carried into empty slices. */
  endInFlight: number
}

const sliceMs = 100

/** A URL a local client can reach: a wildcard listen address is reached on loopback. */
const urlOf = (address: HttpServer.Address): string => {
  if (address._tag === "UnixAddress") return HttpServer.formatAddress(address)
  const { hostname, port } = address
  if (hostname === "0.0.0.0" || hostname === "::") return `http://127.0.0.1:${port}`
  return hostname.includes(":") ? `http://[${hostname}]:${port}` : `http://${hostname}:${port}`
}

const count = (record: Record<string, number>, status: number) => {
  record[status] = (record[status] ?? 0) + 1
}

/**
 * Serves the simulator on the `HttpServer` in context until the scope closes.
 * Dies if `options` are invalid.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, HttpServer.HttpServer | Scope.Scope> =>
  Effect.gen(function*() {
    let given = options
    let config = resolve(options)
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()

    // All state is plain and mutable: every request fiber runs on one thread.
    let epoch = 0
    let random = model.mulberry32(config.seed)
    let requests: model.TokenBucket | undefined
    let tokens: model.TokenBucket | undefined
    let spent = 0
    let nextRequestId = 0
    let nextCompletionId = 0

    let inFlight = 0
    let queued = 0
    let waiting: Array<Ticket> = []
    let head = 0

    let startedAt = now()
    let received = 0
    let byStatus: Record<string, number> = {}
    let peakInFlight = 0
    let peakQueued = 0
    let promptTokens = 0
    let completionTokens = 0
    let timeline = new Map<number, Slice>()
    let lastIndex = -1
    let last: Slice | undefined
    let maxIndex = -1

    const rebucket = (bucket: model.TokenBucket | undefined, perMinute: number, at: number) => {
      if (perMinute === Infinity) return undefined
      if (bucket === undefined) return new model.TokenBucket(perMinute, config.bucketMs, at)
      if (bucket.perMinute === perMinute && bucket.bucketMs === config.bucketMs) return bucket
      return bucket.resize(perMinute, config.bucketMs, at)
    }
    const installBuckets = (at: number) => {
      requests = rebucket(requests, config.requestsPerMinute, at)
      tokens = rebucket(tokens, config.tokensPerMinute, at)
    }
    installBuckets(startedAt)

    // --- metrics --------------------------------------------------------------

    const sliceAt = (at: number): Slice => {
      const index = Math.max(0, Math.floor((at - startedAt) / sliceMs))
      if (index === lastIndex) return last!
      let slice = timeline.get(index)
      if (slice === undefined) {
        slice = { t: index * sliceMs, received: 0, completed: 0, byStatus: {}, peakInFlight: inFlight, endInFlight: inFlight }
        timeline.set(index, slice)
        if (index > maxIndex) maxIndex = index
      }
      lastIndex = index
      last = slice
      return slice
    }

    const inFlightChanged = () => {
      if (inFlight > peakInFlight) peakInFlight = inFlight
      const slice = sliceAt(now())
      if (inFlight > slice.peakInFlight) slice.peakInFlight = inFlight
      slice.endInFlight = inFlight
    }

    const arrive = (): Call => {
      received++
      sliceAt(now()).received++
      return { epoch, id: `req_sim_${++nextRequestId}`, arrivedAt: now(), answered: false }
    }

    const record = (call: Call, status: number) => {
      call.answered = true
      if (call.epoch !== epoch) return // received before a reset
      count(byStatus, status)
      const slice = sliceAt(now())
      slice.completed++
      count(slice.byStatus, status)
    }

    const snapshot = (): Metrics => {
      const entries: Array<TimelineEntry> = []
      let carried = 0
      for (let i = 0; i <= maxIndex; i++) {
        const slice = timeline.get(i)
        if (slice === undefined) {
          entries.push({ t: i * sliceMs, received: 0, completed: 0, byStatus: {}, peakInFlight: carried })
          continue
        }
        const { t, received, completed, peakInFlight } = slice
        entries.push({ t, received, completed, byStatus: { ...slice.byStatus }, peakInFlight })
        carried = slice.endInFlight
      }
      return {
        received,
        byStatus: { ...byStatus },
        inFlight,
        peakInFlight,
        queued,
        peakQueued,
        promptTokens,
        completionTokens,
        timeline: entries,
        batches: batchApi.metrics()
      }
    }

    const reset = () => {
      epoch++
      startedAt = now()
      received = 0
      byStatus = {}
      peakInFlight = inFlight
      peakQueued = queued
      promptTokens = 0
      completionTokens = 0
      timeline = new Map()
      lastIndex = -1
      last = undefined
      maxIndex = -1
      requests = undefined
      tokens = undefined
      installBuckets(startedAt)
      spent = 0
      random = model.mulberry32(config.seed)
      nextRequestId = 0
      nextCompletionId = 0
      batchApi.reset()
    }

    // --- slots and queue ------------------------------------------------------

    const grant = (ticket: Ticket) => {
      ticket.granted = true
      inFlight++
      inFlightChanged()
    }

    const wake = () => {
      while (inFlight < config.capacity && head < waiting.length) {
        const ticket = waiting[head++]!
        if (ticket.left) continue // its client went away while it waited
        queued--
        grant(ticket)
        const resume = ticket.resume
        ticket.resume = undefined
        resume?.(Effect.void)
      }
      if (head > 1024 && head * 2 > waiting.length) {
        waiting = waiting.slice(head)
        head = 0
      }
    }

    /** A ticket holding a slot or queued for one; `undefined` when the queue is full. */
    const enter = (): Ticket | undefined => {
      const ticket: Ticket = { granted: false, left: false, resume: undefined }
      if (queued === 0 && inFlight < config.capacity) {
        grant(ticket)
        return ticket
      }
      if (queued >= config.maxQueue) return undefined
      queued++
      if (queued > peakQueued) peakQueued = queued
      waiting.push(ticket)
      return ticket
    }

    const waitForSlot = (ticket: Ticket): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        if (ticket.granted) resume(Effect.void)
        else ticket.resume = resume
      })

    /** Gives the slot back, or leaves the queue; safe whenever the request ends. */
    const leave = (ticket: Ticket) => {
      if (ticket.granted) {
        ticket.granted = false
        ticket.left = true
        inFlight--
        inFlightChanged()
        wake()
      } else if (!ticket.left) {
        ticket.left = true
        ticket.resume = undefined
        queued--
      }
    }

    // --- rate limits ----------------------------------------------------------

    const rateHeaders = (): HeaderRecord => {
      const headers: HeaderRecord = {}
      if (!config.rateLimitHeaders) return headers
      if (requests !== undefined) {
        headers["x-ratelimit-limit-requests"] = String(requests.perMinute)
        headers["x-ratelimit-remaining-requests"] = String(requests.remaining)
        headers["x-ratelimit-reset-requests"] = model.formatDuration(requests.resetMillis)
      }
      if (tokens !== undefined) {
        headers["x-ratelimit-limit-tokens"] = String(tokens.perMinute)
        headers["x-ratelimit-remaining-tokens"] = String(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = model.formatDuration(tokens.resetMillis)
      }
      return headers
    }

    // --- the pipeline ---------------------------------------------------------

    const respond = (call: Call, status: number, body: unknown, headers: HeaderRecord = {}) => {
      record(call, status)
      headers["x-request-id"] = call.id
      headers["openai-processing-ms"] = String(Math.round(now() - call.arrivedAt))
      return HttpServerResponse.unsafeJson(body, { status, headers })
    }

    // Bearer as OpenAI takes it, or `x-api-key` as Anthropic does.
    const authorized = (request: HttpServerRequest.HttpServerRequest) =>
      config.apiKey === undefined || request.headers["authorization"] === `Bearer ${config.apiKey}` ||
      request.headers["x-api-key"] === config.apiKey

    const unauthorized = (call: Call) => respond(call, 401, unauthorizedBody)

    const serve = (call: Call, job: Job, ticket: Ticket, headers: HeaderRecord) =>
      Effect.gen(function*() {
        if (!ticket.granted) yield* waitForSlot(ticket)
        const { baseMs, perOutputTokenMs, jitter } = config
        const serviceMs = (baseMs + perOutputTokenMs * job.completionTokens) * model.lognormalMultiplier(jitter, random)
        if (serviceMs > 0) yield* Effect.sleep(Duration.millis(serviceMs))
        if (config.failureRate > 0 && random() < config.failureRate) {
          const [status, message] = transientErrors[Math.floor(random() * transientErrors.length)]!
          return respond(call, status, errorBody(message, "server_error", "server_error"))
        }
        if (call.epoch === epoch) {
          spent += job.promptTokens + job.completionTokens
          promptTokens += job.promptTokens
          completionTokens += job.completionTokens
        }
        return respond(call, 200, job.body(Math.floor(now() / 1000)), headers)
      })

    const handle = (decode: (body: unknown) => Job | string) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const call = arrive()
        let ticket: Ticket | undefined
        return yield* Effect.gen(function*() {
          if (!authorized(request)) return unauthorized(call)
          const json = yield* Effect.either(request.json)
          if (Either.isLeft(json)) {
            return respond(call, 400, errorBody(
              "We could not parse the JSON body of your request. The simulator expects a JSON payload.",
              "invalid_request_error",
              "invalid_json"
            ))
          }
          const job = decode(json.right)
          if (typeof job === "string") return respond(call, 400, errorBody(job, "invalid_request_error", "invalid_request"))

          const at = now()
          requests?.refill(at)
          tokens?.refill(at)
          if (spent >= config.quotaTokens) {
            return respond(call, 429, errorBody(
              "You exceeded your current quota, please check your plan and billing details.",
              "insufficient_quota",
              "insufficient_quota"
            ), rateHeaders())
          }
          const requestsWait = requests?.waitMillis(1) ?? 0
          const tokensWait = tokens?.waitMillis(job.charge) ?? 0
          if (requestsWait > 0 || tokensWait > 0) {
            const byRequests = requestsWait >= tokensWait
            const bucket = (byRequests ? requests : tokens)!
            const wait = Math.max(requestsWait, tokensWait)
            const headers = rateHeaders()
            headers["retry-after"] = String(Math.ceil(wait / 1000))
            // Rounded up, so a client that waits exactly this long fits.
            headers["retry-after-ms"] = String(Math.ceil(wait - 1e-6))
            const unit = byRequests ? "requests per min (RPM)" : "tokens per min (TPM)"
            const message = `Rate limit reached for ${unit} on ${job.model}: Limit ${bucket.perMinute}, ` +
              `Remaining ${bucket.remaining}, Requested ${byRequests ? 1 : job.charge}. ` +
              `Please try again in ${model.formatDuration(wait)}.`
            return respond(call, 429, errorBody(message, byRequests ? "requests" : "tokens", "rate_limit_exceeded"), headers)
          }
          requests?.take(1)
          tokens?.take(job.charge)
          const headers = rateHeaders()

          if (job.flagged) {
            return respond(call, 400, errorBody(
              "Invalid prompt: your prompt was flagged by the simulator (it contains INVALID).",
              "invalid_request_error",
              "invalid_prompt"
            ))
          }
          ticket = enter()
          if (ticket === undefined) {
            return respond(call, 503, errorBody(
              "The server is overloaded: too many requests are waiting. Please retry later.",
              "overloaded_error",
              "overloaded"
            ))
          }
          return yield* serve(call, job, ticket, headers)
        }).pipe(
          // Registered before `enter` runs, so an interrupted request always gives its slot or queue place back.
          Effect.ensuring(Effect.sync(() => ticket !== undefined && leave(ticket))),
          Effect.onInterrupt(() => Effect.sync(() => call.answered || record(call, 499)))
        )
      })

    // --- endpoints ------------------------------------------------------------

    const chatJob = (body: unknown): Job | string => {
      const decoded = decodeChat(body)
      if (Either.isLeft(decoded)) return ParseResult.TreeFormatter.formatErrorSync(decoded.left)
      const { max_completion_tokens, max_tokens, messages, model: name, stream } = decoded.right
      if (stream === true) return "stream: true is not supported by the simulator"
      const texts = messages.map((m) => textOf(m.content))
      let key = name
      let flagged = false
      let lastUser: string | undefined
      for (let i = 0; i < messages.length; i++) {
        key += `\u0000${messages[i]!.role}\u0001${texts[i]!}`
        if (texts[i]!.includes("INVALID")) flagged = true
        if (messages[i]!.role === "user") lastUser = texts[i]
      }
      const draw = model.mulberry32(model.hash32(config.seed, key))
      const drawn = model.uniformInt(draw, config.minOutputTokens, config.maxOutputTokens)
      const cap = max_completion_tokens ?? max_tokens ?? undefined
      const completion = cap !== undefined && cap < drawn ? cap : drawn
      const prompt = model.chatPromptTokens(texts)
      return {
        model: name,
        promptTokens: prompt,
        completionTokens: completion,
        charge: prompt + (cap ?? completion),
        flagged,
        body: (created) => ({
          id: `chatcmpl-sim-${++nextCompletionId}`,
          object: "chat.completion",
          created,
          model: name,
          choices: [{
            index: 0,
            message: { role: "assistant", content: model.answerText(lastUser ?? texts[texts.length - 1]!, completion, draw) },
            finish_reason: completion < drawn ? "length" : "stop"
          }],
          usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
        })
      }
    }

    /** An Anthropic Messages request, answered as the chat request it amounts to (the answer is rewritten as a Message). */
    const messagesJob = (params: unknown): Job | string => {
      const p = params as { model?: unknown, max_tokens?: unknown, system?: unknown, messages?: unknown }
      if (typeof p.max_tokens !== "number" || !Number.isInteger(p.max_tokens) || p.max_tokens < 1) {
        return "max_tokens: an integer ≥ 1 is required"
      }
      const system = typeof p.system === "string" ? [{ role: "system", content: p.system }] : []
      const messages = Array.isArray(p.messages) ? [...system, ...p.messages] : p.messages
      return chatJob({ model: p.model, max_tokens: p.max_tokens, messages })
    }

    const embeddingsJob = (body: unknown): Job | string => {
      const decoded = decodeEmbeddings(body)
      if (Either.isLeft(decoded)) return ParseResult.TreeFormatter.formatErrorSync(decoded.left)
      const { dimensions = 8, encoding_format, input, model: name } = decoded.right
      const inputs = typeof input === "string" ? [input] : input
      let prompt = 0
      let flagged = false
      for (const text of inputs) {
        prompt += model.countTokens(text)
        if (text.includes("INVALID")) flagged = true
      }
      const seed = config.seed
      return {
        model: name,
        promptTokens: prompt,
        completionTokens: 0,
        charge: prompt,
        flagged,
        body: () => ({
          object: "list",
          data: inputs.map((text, index) => {
            const vector = model.unitVector(dimensions, model.mulberry32(model.hash32(seed, `${name}\u0000${text}`)))
            return { object: "embedding", index, embedding: encoding_format === "base64" ? model.float32Base64(vector) : vector }
          }),
          model: name,
          usage: { prompt_tokens: prompt, total_tokens: prompt }
        })
      }
    }

    const modelList = () => ({
      object: "list",
      data: config.models.map((id) => ({ id, object: "model", created: modelsCreated, owned_by: "effect-batch-simulator" }))
    })
    const listModels = Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
      authorized(request)
        ? HttpServerResponse.unsafeJson(modelList())
        : HttpServerResponse.unsafeJson(unauthorizedBody, { status: 401 }))

    const notFound = Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
      HttpServerResponse.unsafeJson(
        errorBody(`Unknown request URL: ${request.method} ${request.url}.`, "invalid_request_error", "unknown_url"),
        { status: 404 }
      ))

    const batchApi = batchSurface.make({
      options: () => config.batches,
      now,
      seed: () => config.seed,
      authorized,
      answer: (url, body) =>
        url === "/v1/embeddings" ? embeddingsJob(body) : url === "/v1/messages" ? messagesJob(body) : chatJob(body)
    })
    const batchRoutes = batchApi.routes
    const messageBatchRoutes = batchApi.anthropicRoutes

    const app = HttpRouter.empty.pipe(
      HttpRouter.post("/v1/chat/completions", handle(chatJob)),
      HttpRouter.post("/v1/embeddings", handle(embeddingsJob)),
      HttpRouter.get("/v1/models", listModels),
      HttpRouter.post("/v1/files", batchRoutes.uploadFile),
      HttpRouter.get("/v1/files/:id", batchRoutes.getFile),
      HttpRouter.get("/v1/files/:id/content", batchRoutes.fileContent),
      HttpRouter.del("/v1/files/:id", batchRoutes.deleteFile),
      HttpRouter.post("/v1/batches", batchRoutes.createBatch),
      HttpRouter.get("/v1/batches", batchRoutes.listBatches),
      HttpRouter.get("/v1/batches/:id", batchRoutes.getBatch),
      HttpRouter.post("/v1/batches/:id/cancel", batchRoutes.cancelBatch),
      HttpRouter.post("/v1/messages/batches", messageBatchRoutes.createMessageBatch),
      HttpRouter.get("/v1/messages/batches", messageBatchRoutes.listMessageBatches),
      HttpRouter.get("/v1/messages/batches/:id", messageBatchRoutes.getMessageBatch),
      HttpRouter.post("/v1/messages/batches/:id/cancel", messageBatchRoutes.cancelMessageBatch),
      HttpRouter.get("/v1/messages/batches/:id/results", messageBatchRoutes.messageBatchResults),
      HttpRouter.get("/metrics", Effect.sync(() => HttpServerResponse.unsafeJson(snapshot()))),
      HttpRouter.post("/reset", Effect.sync(() => {
        reset()
        return HttpServerResponse.empty({ status: 204 })
      })),
      Effect.catchTag("RouteNotFound", () => notFound)
    )

    // A span per simulated call would only add cost and bury the client's own spans.
    yield* HttpServer.serveEffect()(app).pipe(HttpMiddleware.withTracerDisabledWhenEffect(() => true))

    const url = yield* HttpServer.addressWith((address) => Effect.succeed(urlOf(address)))

    return {
      url,
      metrics: Effect.sync(snapshot),
      reset: Effect.sync(reset),
      configure: (patch) =>
        Effect.sync(() => {
          const merged = merge(given, patch)
          const next = resolve(merged)
          const reseed = next.seed !== config.seed
          given = merged
          config = next
          if (reseed) random = model.mulberry32(config.seed)
          installBuckets(now())
          wake() // a larger capacity admits queued requests at once
        })
    }
  })

/**
 * The simulator, served on the `HttpServer` the layer is given, e.g.
 * `NodeHttpServer.layer(() => http.createServer(), { port: 0, host: "127.0.0.1" })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Simulator, never, HttpServer.HttpServer> =>
  Layer.scoped(Simulator, make(options))
