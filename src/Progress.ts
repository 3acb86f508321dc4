/**
 * Receives what happens inside a batch, as it happens: attempts starting,
 * items settling, retries with their class and delay, concurrency limit
 * changes, the rate limiter's cooldown gate closing.
 *
 * The default is silent, and a silent batch builds no events at all. A
 * handler runs on the item's fiber, so a slow handler slows the batch: hand
 * events to a queue (`layerQueue`) when the consumer may be slow.
 *
 * What it does not promise: events of different items interleave in the
 * order they happen, not in index order; a handler's failures are not
 * possible (its type is `Effect<void>`), and its defects fail the item.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as BatchReport from "./BatchReport.js"
import type * as TaskError from "./TaskError.js"
import type * as TaskResult from "./TaskResult.js"

/**
 * @since 0.1.0
 * @category models
 */
export type Event =
  | { readonly _tag: "AttemptStarted", readonly index: number, readonly attempt: number }
  | {
    readonly _tag: "ItemSucceeded"
    readonly index: number
    readonly attempts: number
    readonly durationMs: number
    readonly source: TaskResult.Source
    /** Where its time went; set when the item was admitted to make calls (not cached, shared or restored). */
    readonly timeSpent?: BatchReport.TimeSpent | undefined
  }
  | {
    readonly _tag: "ItemFailed"
    readonly index: number
    readonly attempts: number
    readonly errorClass: TaskError.Tag
    readonly error: unknown
    /** As for `ItemSucceeded`. */
    readonly timeSpent?: BatchReport.TimeSpent | undefined
  }
  | { readonly _tag: "ItemSkipped", readonly index: number, readonly reason: TaskResult.SkipReason }
  | {
    readonly _tag: "Retrying"
    readonly index: number
    /** The attempt that failed. */
    readonly attempt: number
    readonly errorClass: TaskError.Tag
    readonly delayMs: number
  }
  | { readonly _tag: "LimitChanged", readonly limit: number }
  | { readonly _tag: "GateClosed", readonly index: number, readonly durationMs: number }

/**
 * @since 0.1.0
 * @category models
 */
export interface Sink {
  /** `false` for the silent default: the engine then builds no events. */
  readonly enabled: boolean
  readonly emit: (event: Event) => Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Progress extends Context.Reference<Progress>()("effect-batch/Progress", {
  defaultValue: (): Sink => silent
}) {}

/**
 * @since 0.1.0
 * @category constructors
 */
export const silent: Sink = { enabled: false, emit: () => Effect.void }

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (emit: (event: Event) => Effect.Effect<void>): Sink => ({ enabled: true, emit })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (emit: (event: Event) => Effect.Effect<void>): Layer.Layer<Progress> =>
  Layer.succeed(Progress, make(emit))

/**
 * Logs every event except attempt starts, at debug level.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLog: Layer.Layer<Progress> = layer((event) =>
  event._tag === "AttemptStarted" ? Effect.void : Effect.logDebug(event._tag, event)
)

/**
 * Offers every event to `queue` (use a sliding or dropping queue so a slow
 * reader never holds the batch back).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerQueue = (queue: Queue.Enqueue<Event>): Layer.Layer<Progress> =>
  layer((event) => Effect.asVoid(Queue.offer(queue, event)))
