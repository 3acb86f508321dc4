/**
 * What `BatchApi` needs of a provider's asynchronous batch API: upload a
 * shard's lines, create a batch on them (with metadata that names the
 * shard), find a batch by that metadata after a crash, read its status,
 * read its results (output and error lines merged, each already given its
 * meaning), cancel it. `OpenAiBatch` implements it for OpenAI's Batch API
 * and anything that speaks it (the simulator does).
 *
 * What it does not promise: the calls retry only what a provider's own
 * transient failures warrant (429, 5xx, a dropped connection) a few times;
 * anything else is a `BatchApiError` for the caller, whose state on disk
 * says where to pick up.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { LineOutcome } from "./internal/batchOutcomes.js"

/**
 * @since 0.1.0
 * @category models
 */
export type { LineOutcome }

/**
 * What a shard's batch is tagged with, so that it can be found again:
 * string pairs (OpenAI keeps up to 16).
 *
 * @since 0.1.0
 * @category models
 */
export type Tags = Readonly<Record<string, string>>

/**
 * What `find` looks for.
 *
 * @since 0.1.0
 * @category models
 */
export interface FindQuery {
  readonly tags: Tags
  /** Created at or after (epoch ms). */
  readonly since: number
  /** Created at or before (epoch ms). */
  readonly until: number
  /** Lines of the shard. */
  readonly requests: number
  /** Batches already claimed by other shards. */
  readonly exclude: ReadonlySet<string>
}

/**
 * Why a batch failed as a whole (OpenAI's `errors.data`).
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchFailure {
  readonly code: string
  readonly message: string
  /** The 1-based line of the input it names, if any. */
  readonly line?: number | undefined
}

/**
 * A batch as last read.
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly id: string
  /** The provider's own word for it (`validating`, `in_progress`, `completed`, ...). */
  readonly state: string
  /**
   * How it ended, once its results can be read: `completed` (some lines
   * may still have failed), `failed` (nothing ran: see `failures`),
   * `expired` or `cancelled` (the lines that ran are in the results);
   * `undefined` while it runs, and while a completed batch's output is not
   * yet readable.
   */
  readonly ended: "completed" | "failed" | "expired" | "cancelled" | undefined
  readonly counts: { readonly total: number, readonly completed: number, readonly failed: number }
  readonly failures: ReadonlyArray<BatchFailure>
  /** Where its results are (provider-specific). */
  readonly results: { readonly output: string | null, readonly errors: string | null }
}

/**
 * @since 0.1.0
 * @category errors
 */
export class BatchApiError extends Data.TaggedError("BatchApiError")<{
  readonly operation: "upload" | "create" | "find" | "poll" | "results" | "cancel"
  /** The HTTP status of the provider's answer, if it answered. */
  readonly status?: number | undefined
  readonly detail: string
}> {
  override get message(): string {
    return `batch API ${this.operation} failed${this.status === undefined ? "" : ` (HTTP ${this.status})`}: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly name: string
  /**
   * Whether lines travel with `create` (Anthropic): `upload` then only holds
   * them in memory, so a resumed run uploads again a shard it had uploaded.
   */
  readonly inline: boolean
  /** The most lines and bytes one batch may hold. */
  readonly limits: { readonly maxRequests: number, readonly maxBytes: number }
  /** One line of a batch input: the request `body` to `endpoint` under `customId`, serialised. */
  readonly line: (customId: string, endpoint: string, body: unknown) => string
  /** Uploads a shard's lines; the reference `create` takes (a file id). Waits until the provider can use it. */
  readonly upload: (name: string, lines: ReadonlyArray<string>) => Effect.Effect<string, BatchApiError>
  /** Creates a batch on an upload, tagged with `tags`; its id. */
  readonly create: (upload: string, endpoint: string, tags: Tags) => Effect.Effect<string, BatchApiError>
  /**
   * The batch a shard created before its id was recorded, if any: by its
   * tags where the provider keeps them, else (Anthropic keeps none) the
   * batch created in the window with as many requests, not in `exclude`.
   */
  readonly find: (query: FindQuery) => Effect.Effect<Option.Option<string>, BatchApiError>
  readonly poll: (id: string) => Effect.Effect<Status, BatchApiError>
  /** Every line of an ended batch's results, each with its meaning. */
  readonly results: (status: Status) => Effect.Effect<ReadonlyArray<LineOutcome>, BatchApiError>
  readonly cancel: (id: string) => Effect.Effect<void, BatchApiError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class BatchProvider extends Context.Tag("effect-batch/BatchProvider")<BatchProvider, Service>() {}
