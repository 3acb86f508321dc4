/**
 * The job service's HTTP contract, as an `HttpApi`: endpoints, payloads,
 * answers and errors. The server (`JobHttp`) implements it, and
 * `HttpApiClient.make(JobApi.Api)` derives a typed client from it; the
 * OpenAPI document is generated from it too.
 *
 * Every endpoint needs a bearer API key (`Authorization: Bearer <key>`); the
 * key names a tenant, and a tenant sees only its own jobs (another tenant's
 * job answers 404, exactly like one that does not exist). Errors are JSON
 * objects with a `_tag` and a `message`, never a stack trace. A body or
 * query field an endpoint does not declare is an error (400), not ignored;
 * only the items themselves, being provider requests, are passed through.
 *
 * What it does not promise: the SSE and JSONL endpoints are declared here as
 * text, so the derived client reads them whole; stream them with a plain HTTP
 * client (the dashboard does).
 *
 * @since 0.1.0
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Context from "effect/Context"
import * as Schema from "effect/Schema"
import * as ChatRequest from "../llm/ChatRequest.js"
import * as Domain from "./Job.js"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * A job id: `job_` and 24 lowercase letters or digits.
 *
 * @since 0.1.0
 * @category schemas
 */
export const JobId = Schema.String.pipe(
  Schema.pattern(/^job_[0-9a-z]{24}$/, { message: () => "a job id is job_ followed by 24 lowercase letters or digits" })
)

/**
 * A job's states, as the API shows them (see `Job.JobState`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const JobState = Domain.JobState

/**
 * @since 0.1.0
 * @category models
 */
export type JobState = Domain.JobState

/**
 * Request bodies and queries refuse fields they do not declare (a misspelt
 * `maxcost` must not run a job without its cost cap). Parse options reach
 * every schema nested inside, until one sets its own.
 */
const refuseUnknownFields = { onExcessProperty: "error" } as const

/**
 * One item: a prompt, or a whole chat request (`messages`, `max_tokens`, ...).
 *
 * An item is the provider's request, not ours: any other request field
 * (`temperature`, `response_format`, ...) is passed through, and a message's
 * fields other than `role` and `content` are dropped, as they always were.
 * So unknown fields are not refused inside an item.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Item = Schema.Union(Schema.String.pipe(Schema.minLength(1)), ChatRequest.ChatRequest).annotations({
  identifier: "Item",
  parseOptions: { onExcessProperty: "ignore" }
})

const Seconds = Schema.Number.pipe(Schema.positive(), Schema.lessThanOrEqualTo(7 * 24 * 3600))

/**
 * What `POST /jobs` takes: the items inline (`items`) or the name of a JSONL
 * file in the server's input folder (`file`), exactly one of the two. A field
 * it does not declare, here or in `timeLimit`, is an error (not inside items).
 *
 * @since 0.1.0
 * @category schemas
 */
export const SubmitJob = Schema.Struct({
  items: Schema.optionalWith(Schema.Array(Item), { exact: true }),
  file: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  /** A provider profile configured on the server. Default: the server's default profile. */
  profile: Schema.optionalWith(Schema.String, { exact: true }),
  /** Default: the profile's first model. */
  model: Schema.optionalWith(Schema.String, { exact: true }),
  /**
   * `realtime` (default): live calls; `batch`: the provider's batch API, at
   * about half the price, answered within 24 h (a replay of its dead letters
   * runs live).
   */
  mode: Schema.optionalWith(Schema.Literal("realtime", "batch"), { exact: true }),
  /** Higher goes first among jobs on the same provider; waiting jobs age, so none starves. Default 0. */
  priority: Schema.optionalWith(Schema.Int.pipe(Schema.between(-10, 10)), { exact: true }),
  /** USD: no item starts once its projected cost would pass this. */
  maxCost: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { exact: true }),
  /** Attempts per item, 1 to 20. Default: the retry policy's (5). */
  maxAttempts: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 20)), { exact: true }),
  /** Seconds from the start of the job: soft stops admitting and lets items in flight finish, hard interrupts them. */
  timeLimit: Schema.optionalWith(
    Schema.Struct({ soft: Schema.optionalWith(Seconds, { exact: true }), hard: Schema.optionalWith(Seconds, { exact: true }) }),
    { exact: true }
  ),
  /** Seconds per attempt; a timed-out attempt is retried like any transient failure. */
  itemTimeout: Schema.optionalWith(Seconds, { exact: true }),
  /** Seconds per item, from its first attempt: past it the item fails with `Timeout`. */
  itemDeadline: Schema.optionalWith(Seconds, { exact: true }),
  /** Free-form labels kept with the job. */
  metadata: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { exact: true })
}).annotations({ identifier: "SubmitJob", parseOptions: refuseUnknownFields })

/**
 * @since 0.1.0
 * @category models
 */
export type SubmitJob = typeof SubmitJob.Type

/**
 * A job as `GET /jobs/:id` shows it.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Job = Schema.Struct({
  id: JobId,
  state: Domain.JobState,
  /** Why a job stopped, failed or was cancelled. */
  reason: Schema.optional(Schema.String),
  profile: Schema.String,
  model: Schema.String,
  priority: Schema.Int,
  /** `batch` for a job run through the provider's batch API. */
  mode: Schema.optional(Schema.Literal("realtime", "batch")),
  counts: Domain.Counts,
  /** Items settled per second over the last few seconds (0 when not running). */
  rate: Schema.Number,
  /** Seconds until every item settles at the current rate. */
  etaSeconds: Schema.optional(Schema.Number),
  /** USD spent so far. */
  cost: Schema.Number,
  tokens: Schema.Int,
  /** The concurrency limit of the job's provider now (shared by every job on it). */
  concurrencyLimit: Schema.Int,
  /** Where its items' time went, once a chunk of it has ended (not for a batch-mode job). */
  timeSpent: Schema.optional(Domain.TimeSpent),
  /** How many times its dead letters were replayed. */
  round: Schema.Int,
  createdAt: Schema.Number,
  startedAt: Schema.optional(Schema.Number),
  finishedAt: Schema.optional(Schema.Number),
  metadata: Schema.Record({ key: Schema.String, value: Schema.String })
})

/**
 * @since 0.1.0
 * @category models
 */
export type Job = typeof Job.Type

/**
 * @since 0.1.0
 * @category schemas
 */
export const Submitted = Schema.Struct({
  id: JobId,
  state: Domain.JobState,
  /** `false` when the `Idempotency-Key` named a job submitted before with the same body: this is that job. */
  created: Schema.Boolean,
  /** Lines of a `file` that are not items: they are in the job as failed (class `Rejected`, naming `file:line`). */
  rejected: Schema.optional(Schema.Int)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const JobPage = Schema.Struct({
  jobs: Schema.Array(Job),
  /** Pass as `cursor` for the next page; absent on the last. */
  next: Schema.optional(Schema.String)
})

/**
 * The provider batches of a job in `batch` mode, one per shard: round,
 * model, lines, state (`planned`, `uploaded`, `submitting`, `submitted`,
 * `ingested`), the provider's batch id once created.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Shards = Schema.Struct({
  shards: Schema.Array(Schema.Struct({
    key: Schema.String,
    round: Schema.Int,
    model: Schema.String,
    lines: Schema.Int,
    state: Schema.String,
    batch: Schema.optional(Schema.String),
    cancelled: Schema.Boolean,
    /** Once ingested: lines sent again in the next round. */
    again: Schema.Int
  }))
})

/**
 * An item that failed for good, with its last error.
 *
 * @since 0.1.0
 * @category schemas
 */
export const DeadLetter = Schema.Struct({
  index: Schema.Int,
  input: Schema.Unknown,
  errorClass: Schema.String,
  message: Schema.String,
  status: Schema.optional(Schema.Int),
  attempts: Schema.Int
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const DeadLetters = Schema.Struct({ items: Schema.Array(DeadLetter) })

/**
 * A provider profile as clients see it (never its URL or key).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Profile = Schema.Struct({
  name: Schema.String,
  models: Schema.Array(Schema.String),
  default: Schema.Boolean
})

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * No such job for this tenant.
 *
 * @since 0.1.0
 * @category errors
 */
export class JobNotFound extends Schema.TaggedError<JobNotFound>()("JobNotFound", {
  id: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 404 })) {}

/**
 * A submission the schema accepted but the server cannot run, naming the
 * field: both or neither of `items` and `file`, an unknown profile or model,
 * a file that cannot be read or has a bad line.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidJob extends Schema.TaggedError<InvalidJob>()("InvalidJob", {
  field: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 400 })) {}

/**
 * More items than the server takes in one job.
 *
 * @since 0.1.0
 * @category errors
 */
export class TooManyItems extends Schema.TaggedError<TooManyItems>()("TooManyItems", {
  limit: Schema.Int,
  count: Schema.Int,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 413 })) {}

/**
 * The job is in a state that does not allow this: e.g. replaying the dead
 * letters of a job still running.
 *
 * @since 0.1.0
 * @category errors
 */
export class JobBusy extends Schema.TaggedError<JobBusy>()("JobBusy", {
  id: Schema.String,
  state: Domain.JobState,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 409 })) {}

/**
 * The `Idempotency-Key` named a job submitted with another request: a key is
 * for retrying one request, so the same key with a different body is
 * refused rather than answered with the first job. Bodies are compared as
 * decoded (the order of fields does not matter).
 *
 * @since 0.1.0
 * @category errors
 */
export class IdempotencyKeyReused extends Schema.TaggedError<IdempotencyKeyReused>()("IdempotencyKeyReused", {
  key: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 422 })) {}

/**
 * A missing, malformed or unknown API key.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 401 })) {}

// ---------------------------------------------------------------------------
// security
// ---------------------------------------------------------------------------

/**
 * The tenant the request's API key belongs to.
 *
 * @since 0.1.0
 * @category security
 */
export class Tenant extends Context.Tag("effect-batch/JobApi/Tenant")<Tenant, { readonly name: string }>() {}

/**
 * Bearer API keys; provides the `Tenant`.
 *
 * @since 0.1.0
 * @category security
 */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("effect-batch/JobApi/Authentication", {
  failure: Unauthorized,
  provides: Tenant,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

// ---------------------------------------------------------------------------
// endpoints
// ---------------------------------------------------------------------------

const id = HttpApiSchema.param("id", Schema.String)

/**
 * @since 0.1.0
 * @category api
 */
export class JobsGroup extends HttpApiGroup.make("jobs")
  .add(
    HttpApiEndpoint.post("submit", "/jobs")
      .setPayload(SubmitJob)
      .setHeaders(Schema.Struct({ "idempotency-key": Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))) }))
      .addSuccess(Submitted, { status: 202 })
      .addError(InvalidJob)
      .addError(TooManyItems)
      .addError(IdempotencyKeyReused)
      .annotate(OpenApi.Summary, "Submit a job; answers at once with its id")
  )
  .add(
    HttpApiEndpoint.get("list", "/jobs")
      .setUrlParams(Schema.Struct({
        state: Schema.optional(Domain.JobState),
        limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 200))),
        cursor: Schema.optional(Schema.String)
      }).annotations({ parseOptions: refuseUnknownFields }))
      .addSuccess(JobPage)
      .addError(InvalidJob)
      .annotate(OpenApi.Summary, "The tenant's jobs, newest first")
  )
  .add(
    HttpApiEndpoint.get("get")`/jobs/${id}`
      .addSuccess(Job)
      .addError(JobNotFound)
      .annotate(OpenApi.Summary, "A job: state, counts, rate, ETA, cost, concurrency limit")
  )
  .add(
    HttpApiEndpoint.get("events")`/jobs/${id}/events`
      .setHeaders(Schema.Struct({ "last-event-id": Schema.optional(Schema.String) }))
      .addSuccess(Schema.String.pipe(HttpApiSchema.withEncoding({ kind: "Text", contentType: "text/event-stream" })))
      .addError(JobNotFound)
      .addError(InvalidJob)
      .annotate(OpenApi.Summary, "Server-sent events: progress, item failures, limit and state changes; resumes after Last-Event-ID")
  )
  .add(
    HttpApiEndpoint.get("results")`/jobs/${id}/results`
      .setUrlParams(Schema.Struct({
        /** `true`: every item in input order, each as soon as it and all before it have settled, until the job ends. */
        follow: Schema.optional(Schema.BooleanFromString)
      }).annotations({ parseOptions: refuseUnknownFields }))
      .addSuccess(Schema.String.pipe(HttpApiSchema.withEncoding({ kind: "Text", contentType: "application/x-ndjson" })))
      .addError(JobNotFound)
      .annotate(OpenApi.Summary, "Settled items as JSON lines, in input order (also while the job runs; follow=true waits for the rest)")
  )
  .add(
    HttpApiEndpoint.post("cancel")`/jobs/${id}/cancel`
      .addSuccess(Job)
      .addError(JobNotFound)
      .annotate(OpenApi.Summary, "Cancel: calls in flight are aborted, results so far are kept")
  )
  .add(
    HttpApiEndpoint.get("deadLetters")`/jobs/${id}/dead-letters`
      .addSuccess(DeadLetters)
      .addError(JobNotFound)
      .annotate(OpenApi.Summary, "Items that failed for good, with their last error")
  )
  .add(
    HttpApiEndpoint.get("shards")`/jobs/${id}/shards`
      .addSuccess(Shards)
      .addError(JobNotFound)
      .annotate(OpenApi.Summary, "A batch-mode job's provider batches, one per shard (none for a live job)")
  )
  .add(
    HttpApiEndpoint.post("replay")`/jobs/${id}/dead-letters/replay`
      .addSuccess(Job, { status: 202 })
      .addError(JobNotFound)
      .addError(JobBusy)
      .annotate(OpenApi.Summary, "Run the dead letters again")
  )
  .add(
    HttpApiEndpoint.get("profiles", "/profiles")
      .addSuccess(Schema.Struct({ profiles: Schema.Array(Profile) }))
      .annotate(OpenApi.Summary, "The provider profiles jobs can use")
  )
  .addError(HttpApiError.InternalServerError)
  .middleware(Authentication) {}

/**
 * @since 0.1.0
 * @category api
 */
export class Api extends HttpApi.make("effect-batch")
  .add(JobsGroup)
  .annotate(OpenApi.Title, "effect-batch job service")
  .annotate(OpenApi.Description, "Submit batches of LLM calls, watch them over SSE, cancel them, replay their dead letters.") {}
