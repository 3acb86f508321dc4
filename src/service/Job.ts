/**
 * A job of the job service, as a domain: the states it goes through, which
 * of them are final, and the counts of its items. The HTTP contract
 * (`JobApi`), the store (`JobStore`), the runner and the service all speak
 * these; none of them owns them.
 *
 * What it does not promise: which moves between states are allowed is still
 * decided where each move is made (the store's `setState` guards), not in
 * one table here.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

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
 * States a job does not leave (until its dead letters are replayed).
 *
 * @since 0.1.0
 * @category models
 */
export const isTerminal = (state: JobState): boolean => state !== "queued" && state !== "running"

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
