/**
 * A job of the job service, as a domain: the states it goes through, the one
 * table of the moves between them, which states are final, the counts of its
 * items, and the Schemas of everything the service keeps or sends as JSON (an
 * item's input, its three kinds of output, a job's spec and metadata, the
 * payloads of its events). The HTTP contract (`JobApi`), the store
 * (`JobStore`), the runner and the service all speak these; none of them
 * owns them.
 *
 * The lifecycle: a job is `queued` when submitted; the runner moves it to
 * `running`, then to one of the final states; a request may cancel it while
 * it is not final; replaying its dead letters moves a final job back to
 * `queued` (a new round). Every store backend refuses any other move
 * (`JobStore.setState` answers `false`), atomically, by this table.
 *
 * What it does not promise: the table says which moves are allowed, not who
 * makes them or when (the runner and the service decide that), and a move to
 * the state a job is already in is not a move: it is refused like any other
 * not in the table.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as ChatRequest from "../llm/ChatRequest.js"

/**
 * `queued` (submitted, not started), `running`, `finished` (every item
 * settled, some may have failed), `stopped` (a soft time limit or the budget
 * ended admission; items not started are `skipped`), `cancelled`, `failed`
 * (the job itself could not go on: a hard time limit, or a storage error).
 *
 * @since 0.1.0
 * @category schemas
 */
export const JobState = Schema.Literal("queued", "running", "finished", "stopped", "cancelled", "failed")

/**
 * @since 0.1.0
 * @category models
 */
export type JobState = typeof JobState.Type

/**
 * Every allowed move, from-state to the states it may move to.
 *
 * - `queued → running`: the runner starts the job (or its replay).
 * - `queued → failed`: the runner could not start it (a storage error).
 * - `queued | running → cancelled`: a cancel request.
 * - `running → finished | stopped | failed`: the runner ends it.
 * - `finished | stopped | cancelled | failed → queued`: its dead letters are
 *   replayed (`JobStore.reopenFailed`), as a new round.
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const transitions: { readonly [From in JobState]: ReadonlyArray<JobState> } = {
  queued: ["running", "cancelled", "failed"],
  running: ["finished", "stopped", "cancelled", "failed"],
  finished: ["queued"],
  stopped: ["queued"],
  cancelled: ["queued"],
  failed: ["queued"]
}

/**
 * Whether a job in `from` may move to `to` (see `transitions`).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const canMove = (from: JobState, to: JobState): boolean => transitions[from].includes(to)

/**
 * The states a job may move to `to` from: what a store's guard on a move
 * matches (`WHERE state IN …`).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const sourcesOf = (to: JobState): ReadonlyArray<JobState> => JobState.literals.filter((from) => canMove(from, to))

/**
 * States a job does not leave (until its dead letters are replayed).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const isTerminal = (state: JobState): boolean => state !== "queued" && state !== "running"

/**
 * Where a job's items' time went (`BatchReport.TimeSpent`), in ms summed over
 * the items of its chunks that ended: what held the job back.
 *
 * @since 0.2.0
 * @category schemas
 */
export const TimeSpent = Schema.Struct({
  /** Items that made calls. */
  items: Schema.Int,
  /** Waiting for a concurrency permit. */
  queuedMs: Schema.Number,
  /** Waiting for the rate limiter. */
  rateLimitMs: Schema.Number,
  /** Waiting for the cooldown gate after a 429. */
  gateMs: Schema.Number,
  /** Calls in flight at the provider. */
  inFlightMs: Schema.Number,
  /** Waiting between attempts. */
  backoffMs: Schema.Number,
  /** The items' wall time: the parts above and the engine's own work. */
  wallMs: Schema.Number
}).annotations({ identifier: "TimeSpent" })

/**
 * @since 0.1.0
 * @category schemas
 */
export const Counts = Schema.Struct({
  total: Schema.Int,
  succeeded: Schema.Int,
  failed: Schema.Int,
  skipped: Schema.Int,
  /** Not settled yet. */
  pending: Schema.Int
})

/**
 * @since 0.1.0
 * @category models
 */
export type Counts = typeof Counts.Type

// ---------------------------------------------------------------------------
// what is kept as JSON
// ---------------------------------------------------------------------------

/**
 * What defines a job besides its items, as submitted (validated) and kept.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Spec = Schema.Struct({
  /** `batch`: through the provider's batch API (`BatchApi`); absent: live calls. */
  mode: Schema.optional(Schema.Literal("realtime", "batch")),
  maxCost: Schema.optional(Schema.Number),
  maxAttempts: Schema.optional(Schema.Int),
  softLimitSeconds: Schema.optional(Schema.Number),
  hardLimitSeconds: Schema.optional(Schema.Number),
  itemTimeoutSeconds: Schema.optional(Schema.Number),
  itemDeadlineSeconds: Schema.optional(Schema.Number)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Spec = typeof Spec.Type

/**
 * Free-form labels kept with a job.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Metadata = Schema.Record({ key: Schema.String, value: Schema.String })

/**
 * @since 0.1.0
 * @category models
 */
export type Metadata = typeof Metadata.Type

/**
 * An item's input: a prompt or a chat request, as the HTTP contract or the
 * JSONL reader decoded it. A line of a `file` that could not be read is kept
 * as its text (a string), and never run.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ItemInput = Schema.Union(Schema.String, ChatRequest.ChatRequest)

/**
 * @since 0.1.0
 * @category models
 */
export type ItemInput = typeof ItemInput.Type

/**
 * The output of an item that succeeded: the provider's answer, its usage and
 * its cost (USD).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Completion = Schema.Struct({
  content: Schema.String,
  finishReason: Schema.NullOr(Schema.String),
  usage: Schema.Struct({
    promptTokens: Schema.Number,
    cachedPromptTokens: Schema.Number,
    completionTokens: Schema.Number,
    totalTokens: Schema.Number
  }),
  cost: Schema.Number,
  model: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type Completion = typeof Completion.Type

/**
 * The output of an item that failed: its last error's class, message and
 * HTTP status (if it had one). An input line that could not be read has the
 * class `Rejected` and names `file:line`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Failure = Schema.Struct({
  class: Schema.String,
  message: Schema.String,
  status: Schema.optional(Schema.Number)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Failure = typeof Failure.Type

/**
 * The output of an item that was skipped: why (a budget, a time limit, a
 * cancel, or `not run`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Skip = Schema.Struct({ reason: Schema.String })

/**
 * @since 0.1.0
 * @category models
 */
export type Skip = typeof Skip.Type

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

/**
 * The types of a job's events (the SSE `event:` field).
 *
 * @since 0.1.0
 * @category schemas
 */
export const EventType = Schema.Literal("progress", "item-failed", "limit", "state")

/**
 * @since 0.1.0
 * @category models
 */
export type EventType = typeof EventType.Type

/**
 * A `progress` event: the counts, cost and tokens so far, the rate (items
 * per second) and, while running, the ETA and the provider's concurrency
 * limit.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ProgressEvent = Schema.Struct({
  ...Counts.fields,
  cost: Schema.Number,
  tokens: Schema.Number,
  rate: Schema.Number,
  etaSeconds: Schema.optional(Schema.Number),
  concurrencyLimit: Schema.optional(Schema.Number)
})

/**
 * A `progress` event as stored and sent: with when it was published (`at`,
 * ms since the epoch).
 *
 * @since 0.1.0
 * @category schemas
 */
export const PublishedProgress = Schema.extend(ProgressEvent, Schema.Struct({ at: Schema.Number }))

/**
 * An `item-failed` event: an item failed for good.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ItemFailedEvent = Schema.Struct({
  index: Schema.Int,
  errorClass: Schema.String,
  message: Schema.String,
  attempts: Schema.Int
})

/**
 * A `limit` event: the provider's concurrency limit changed.
 *
 * @since 0.1.0
 * @category schemas
 */
export const LimitEvent = Schema.Struct({ limit: Schema.Number })

/**
 * A `state` event: the job moved; `replaying` counts the dead letters a
 * replay reopened.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StateEvent = Schema.Struct({
  state: JobState,
  reason: Schema.optional(Schema.String),
  replaying: Schema.optional(Schema.Int)
})

/**
 * The payload of each event type, as published. Every event's data also
 * says when it was published (`at`, ms since the epoch).
 *
 * @since 0.1.0
 * @category models
 */
export interface EventData {
  readonly "progress": typeof ProgressEvent.Type
  readonly "item-failed": typeof ItemFailedEvent.Type
  readonly "limit": typeof LimitEvent.Type
  readonly "state": typeof StateEvent.Type
}
