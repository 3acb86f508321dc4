/**
 * A job of the job service, as a domain: the states it goes through, the one
 * table of the moves between them, which states are final, and the counts of
 * its items. The HTTP contract (`JobApi`), the store
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
