/**
 * The job service's HTTP side: the handlers of `JobApi`, bearer-key
 * authentication, the SSE and JSONL streams, the payload size limit, schema
 * errors whose message names each bad field's path, the OpenAPI document
 * (`/openapi.json`), its reference page (`/reference`), the dashboard
 * (`/`) and Prometheus metrics (`/metrics`, behind a key unless made
 * public).
 *
 * What it does not promise: CORS (the dashboard is served by the service
 * itself, so it needs none).
 *
 * @since 0.1.0
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpApiScalar from "@effect/platform/HttpApiScalar"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as ApiKeys from "./ApiKeys.js"
import * as Dashboard from "./Dashboard.js"
import * as JobApi from "./JobApi.js"
import type * as JobEvents from "./JobEvents.js"
import * as Jobs from "./Jobs.js"
import * as JobStore from "./JobStore.js"
import * as ServiceMetrics from "./ServiceMetrics.js"
import * as PrometheusText from "../PrometheusText.js"
import * as JsonDepth from "../JsonDepth.js"
import { issuePath } from "../internal/issuePath.js"

/** Between SSE keep-alive comments. */
export const keepAliveEvery = "15 seconds"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Request bodies larger than this are refused with 413. Default 10 MiB. */
  readonly maxBodyBytes?: number | undefined
  /** Serve `/metrics` without an API key (for a scraper inside a trusted network). Default `false`. */
  readonly publicMetrics?: boolean | undefined
}

const sseFrame = (event: JobEvents.Event) => `id: ${event.seq}\nevent: ${event.type}\ndata: ${event.data}\n\n`
const encoder = new TextEncoder()
const retryHint = encoder.encode("retry: 2000\n\n")
const keepAlive = encoder.encode(": keep-alive\n\n")
/** How long a follower may stay quiet before a keep-alive comment. */
const quietFor = Duration.decode(keepAliveEvery)

/**
 * The follower's events as an SSE response: a `retry` hint first, each
 * batch of events in one chunk, a keep-alive comment when nothing came for
 * `keepAliveEvery`, and the end of the response when the follower ends.
 *
 * One pull per batch, written as bytes here: as a stream of single events
 * through a frame map, a merge with a keep-alive schedule and a text encoder,
 * the route took about 1 600 fiber steps per subscriber of the jobs bench
 * (six events each, the connection's setup included); this way, 840.
 *
 * @since 0.1.0
 * @category sse
 */
export const sseResponse = (follow: Effect.Effect<JobEvents.Follower, never, Scope.Scope>): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.stream(
    Stream.unwrapScoped(Effect.map(Effect.zipRight(ServiceMetrics.trackSubscriber, follow), (follower) => {
      let started = false
      let ended = false
      const pull = Effect.suspend((): Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<never>> => {
        if (!started) {
          started = true
          return Effect.succeed(Chunk.of(retryHint))
        }
        if (ended) return Effect.fail(Option.none())
        return Effect.map(Effect.orDie(follower.next(quietFor)), (batch) => {
          ended = batch.ended
          if (batch.events.length > 0) return Chunk.of(encoder.encode(batch.events.map(sseFrame).join("")))
          return ended ? Chunk.empty() : Chunk.of(keepAlive)
        })
      })
      return Stream.repeatEffectChunkOption(pull)
    })),
    {
      contentType: "text/event-stream",
      headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
    }
  )

const tenant = Effect.map(JobApi.Tenant, (t) => t.name)

/**
 * The handlers of the `jobs` group.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerHandlers = HttpApiBuilder.group(JobApi.Api, "jobs", (handlers) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    return handlers
      .handle("submit", ({ headers, payload }) =>
        ServiceMetrics.trackSubmission(Effect.flatMap(tenant, (t) => jobs.submit(t, payload, headers["idempotency-key"]))))
      .handle("list", ({ urlParams }) => Effect.flatMap(tenant, (t) => jobs.list(t, urlParams)))
      .handle("get", ({ path }) => Effect.flatMap(tenant, (t) => jobs.get(t, path.id)))
      .handle("cancel", ({ path }) => Effect.flatMap(tenant, (t) => jobs.cancel(t, path.id)))
      .handle("deadLetters", ({ path }) => Effect.flatMap(tenant, (t) => jobs.deadLetters(t, path.id)))
      .handle("replay", ({ path }) => Effect.flatMap(tenant, (t) => jobs.replay(t, path.id)))
      .handle("shards", ({ path }) => Effect.flatMap(tenant, (t) => jobs.shards(t, path.id)))
      .handle("profiles", () => Effect.succeed({ profiles: jobs.profiles }))
      .handleRaw("results", ({ path, urlParams }) =>
        Effect.flatMap(tenant, (t) =>
          Effect.map(jobs.results(t, path.id, urlParams), (lines) =>
            HttpServerResponse.stream(Stream.encodeText(lines), { contentType: "application/x-ndjson" }))))
      .handleRaw("events", ({ headers, path }) =>
        Effect.gen(function*() {
          const t = yield* tenant
          const last = headers["last-event-id"]
          if (last !== undefined && !/^\d{1,15}$/.test(last.trim())) {
            return yield* Effect.fail(new JobApi.InvalidJob({ field: "Last-Event-ID", message: `expected an event id (a whole number), got ${JSON.stringify(last)}` }))
          }
          const events = yield* jobs.events(t, path.id, last === undefined ? 0 : Number(last.trim()))
          return sseResponse(events)
        }))
  }))

/**
 * Bearer keys to tenants.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAuthentication = Layer.effect(
  JobApi.Authentication,
  Effect.map(ApiKeys.ApiKeys, (keys) => ({
    bearer: (token) => {
      const name = keys.tenantOf(token)
      return name === undefined
        ? Effect.fail(new JobApi.Unauthorized({ message: "a valid API key is needed: Authorization: Bearer <key>" }))
        : Effect.succeed({ name })
    }
  }))
)

const maxIssues = 5
const maxIssueLength = 300

/**
 * The issues of a request the schema refused, one clause each, each naming
 * its path: `timeLimit.hadr is unexpected, expected: "soft" | "hard"`. An
 * issue on a path another issue goes deeper into is left out: it is a
 * union's other branch (`items[0]: Expected string`, when the item is an
 * object whose `messages` is wrong).
 *
 * @since 0.1.0
 * @category errors
 */
export const decodeErrorMessage = (issues: ReadonlyArray<typeof HttpApiError.Issue.Type>): string => {
  const deeper = (a: ReadonlyArray<PropertyKey>, b: ReadonlyArray<PropertyKey>) =>
    b.length > a.length && a.every((key, i) => key === b[i])
  const kept = issues.filter((issue) => !issues.some((other) => deeper(issue.path, other.path)))
  const clauses = kept.slice(0, maxIssues).map((issue) => {
    const message = issue.message.length > maxIssueLength ? `${issue.message.slice(0, maxIssueLength)}…` : issue.message
    const path = issue.path.length === 0 ? "the request" : issuePath(issue.path, { hyphens: true })
    return message.startsWith("is ") ? `${path} ${message}` : `${path}: ${message}`
  })
  if (kept.length > maxIssues) clauses.push(`and ${kept.length - maxIssues} more`)
  return clauses.join("; ")
}

/**
 * Rewrites the message of the API's schema errors (`HttpApiDecodeError`)
 * with `decodeErrorMessage`: the schema's own is a tree whose first line is
 * the whole type. The `issues` stay as they are.
 *
 * @since 0.1.0
 * @category middleware
 */
export const layerDecodeErrors = HttpApiBuilder.middleware(JobApi.Api, (app) =>
  Effect.catchSomeCause(app, (cause) =>
    Option.map(
      Option.filter(Cause.failureOption(cause), (error: unknown) => error instanceof HttpApiError.HttpApiDecodeError),
      (error: HttpApiError.HttpApiDecodeError) =>
        Effect.fail(new HttpApiError.HttpApiDecodeError({ issues: error.issues, message: decodeErrorMessage(error.issues) }))
    )))

/**
 * Checks request bodies before the API decodes them: over `maxBodyBytes`, a
 * JSON 413 (before reading, when the length is announced; reading stops at
 * the limit when it is not); a body of another type than JSON, a JSON 415
 * (one without a Content-Type is taken for JSON, as the API reads it); a
 * JSON body that does not parse, a JSON 400 saying where (the API's own
 * decoder would answer an empty 400); one that nests deeper than
 * `JsonDepth.limit`, a JSON 400 (`PayloadTooDeep`). The body read here is
 * cached by the request, so it is read once.
 *
 * @since 0.1.0
 * @category middleware
 */
export const checkBody = (maxBodyBytes: number) => (app: HttpApp.Default): HttpApp.Default =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const tooLarge = (length: number | undefined) =>
      HttpServerResponse.unsafeJson({
        _tag: "PayloadTooLarge",
        limit: maxBodyBytes,
        message: `the request body ${length === undefined ? "is" : `has ${length} bytes;`} larger than the ${maxBodyBytes} bytes taken`
      }, { status: 413 })
    const length = Number(request.headers["content-length"] ?? "0")
    if (Number.isFinite(length) && length > maxBodyBytes) return Effect.succeed(tooLarge(length))
    const hasBody = length > 0 || request.headers["transfer-encoding"] !== undefined
    const contentType = (request.headers["content-type"] ?? "").trim().toLowerCase()
    const limited = HttpServerRequest.withMaxBodySize(app, Option.some(maxBodyBytes))
    if (!hasBody) return limited
    // The API reads a body with no Content-Type as JSON too, and would die on a malformed multipart one.
    if (contentType !== "" && !contentType.includes("application/json")) {
      return Effect.succeed(HttpServerResponse.unsafeJson({
        _tag: "UnsupportedMediaType",
        message: `request bodies are JSON (Content-Type: application/json), not ${contentType.slice(0, 100)}`
      }, { status: 415 }))
    }
    return request.text.pipe(
      HttpServerRequest.withMaxBodySize(Option.some(maxBodyBytes)),
      Effect.matchEffect({
        onFailure: () => Effect.succeed(tooLarge(undefined)),
        onSuccess: (text) => {
          try {
            if (!JsonDepth.exceeds(JSON.parse(text))) return limited
            return Effect.succeed(HttpServerResponse.unsafeJson({
              _tag: "PayloadTooDeep",
              limit: JsonDepth.limit,
              message: `the request body nests arrays and objects more than ${JsonDepth.limit} levels deep`
            }, { status: 400 }))
          } catch (error) {
            return Effect.succeed(HttpServerResponse.unsafeJson({
              _tag: "InvalidJson",
              message: `the request body is not valid JSON: ${error instanceof Error ? error.message : String(error)}`
            }, { status: 400 }))
          }
        }
      })
    )
  })

/**
 * The dashboard page at `/`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDashboard = HttpApiBuilder.Router.use((router) =>
  router.get("/", Effect.succeed(HttpServerResponse.html(Dashboard.page))))

const bearer = /^Bearer\s+(.+)$/i

/**
 * The answer to `GET /metrics`: Prometheus text of every metric in Effect's
 * registry (the chunks' `BatchMetrics` and `ServiceMetrics`), the store's
 * figures read at each scrape; 401 without a valid API key (any tenant's:
 * the figures are the service's, not a tenant's) unless `publicMetrics`.
 */
const metricsResponse = (options: Options) =>
  Effect.gen(function*() {
    if (options.publicMetrics !== true) {
      const keys = yield* ApiKeys.ApiKeys
      const request = yield* HttpServerRequest.HttpServerRequest
      const token = bearer.exec(request.headers.authorization ?? "")?.[1]
      if (token === undefined || keys.tenantOf(Redacted.make(token)) === undefined) {
        return HttpServerResponse.unsafeJson(
          { _tag: "Unauthorized", message: "a valid API key is needed for /metrics: Authorization: Bearer <key>" },
          { status: 401, headers: { "www-authenticate": "Bearer" } }
        )
      }
    }
    yield* ServiceMetrics.refresh
    return HttpServerResponse.text(yield* PrometheusText.snapshot, { contentType: PrometheusText.contentType })
  })

/**
 * Prometheus text at `/metrics`, beside the API (`metricsResponse`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerMetrics = (options: Options = {}) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function*() {
      const context = yield* Effect.context<ApiKeys.ApiKeys | JobStore.JobStore>()
      yield* router.get("/metrics", Effect.provide(metricsResponse(options), context))
    })
  )

/**
 * `/metrics` alone, on the `HttpServer` in context, for a process that serves
 * no API (`serve --role runner --metrics-port N`): its own chunks' metrics
 * are in no other process's registry. Every other path is a 404.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerMetricsServer = (options: Options = {}) =>
  HttpRouter.empty.pipe(
    HttpRouter.get("/metrics", metricsResponse(options)),
    Effect.catchTag("RouteNotFound", () =>
      Effect.succeed(HttpServerResponse.unsafeJson(
        { _tag: "NotFound", message: "this process serves /metrics alone (a runner: the API is on the api processes)" },
        { status: 404 }
      ))),
    HttpServer.serve()
  )

/**
 * The API (handlers and authentication), ready for `HttpApiBuilder.serve`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerApi = HttpApiBuilder.api(JobApi.Api).pipe(
  Layer.provide(layerHandlers),
  Layer.provide(layerAuthentication)
)

/**
 * Everything served: the API, `/openapi.json`, `/reference`, the dashboard.
 * Needs an `HttpServer`, `Jobs` and `ApiKeys`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerServer = (options: Options = {}) =>
  HttpApiBuilder.serve(checkBody(options.maxBodyBytes ?? 10 * 1024 * 1024)).pipe(
    Layer.provide(layerDecodeErrors),
    Layer.provide(HttpApiScalar.layer({ path: "/reference" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    Layer.provide(layerDashboard),
    Layer.provide(layerMetrics(options)),
    Layer.provide(layerApi)
  )
