/**
 * Which item an attempt belongs to, so that a task can send the provider an
 * idempotency key that stays the same across retries, crashes and resumes: a
 * provider that honours the key never bills twice for a call that was in
 * flight when the process died.
 *
 * The batch engine provides `CurrentItem` to every attempt of a checkpointed
 * run (`runId` and the item's checkpoint key). Where an item's key is the
 * index its task is called with, `CurrentRun` is provided once for the whole
 * batch instead: the job service does so for its jobs (the job id; the task
 * is called with the item's index in the job). A task reads `key`, or
 * `keyAt(index)` (as `OpenAiCompat` does for its `Idempotency-Key` header),
 * or the item itself.
 *
 * What it does not promise: that the provider honours the key, nor anything
 * outside a checkpointed run or a job — there, `keyAt` is `None` and a task
 * derives its own (e.g. from the request and the item's index). `key`, which
 * knows no index, reads `CurrentItem` only: in a job it is `None` too.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as hashing from "./internal/hashing.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Item {
  /** The durable run (or job) the item belongs to. */
  readonly runId: string
  /** The item's identity within it, the same in every attempt and every resume. */
  readonly itemKey: string
}

/**
 * The item the current attempt belongs to.
 *
 * @since 0.1.0
 * @category context
 */
export class CurrentItem extends Context.Tag("effect-batch/Idempotency/CurrentItem")<CurrentItem, Item>() {}

/**
 * A run whose items' keys are the indexes their tasks are called with: the
 * item at index `i` is `{ runId, itemKey: String(i) }`. Provided once per
 * batch, it spares every attempt a `provideService` of its `CurrentItem`
 * (about a tenth of the fiber steps of a job service's item, measured).
 *
 * @since 0.1.0
 * @category context
 */
export class CurrentRun extends Context.Tag("effect-batch/Idempotency/CurrentRun")<CurrentRun, { readonly runId: string }>() {}

/**
 * An item's idempotency key: 40 hex digits of the SHA-256 of its canonical
 * JSON, so it never reveals the run id and fits any provider's header.
 *
 * @since 0.1.0
 * @category keys
 */
export const keyOf = (item: Item): string =>
  // `hashOf({ runId, itemKey })`'s canonical JSON, written out: this runs at every attempt of a job's item.
  hashing.sha256Hex(`{"itemKey":${JSON.stringify(item.itemKey)},"runId":${JSON.stringify(item.runId)}}`).slice(0, 40)

/**
 * The key of the item the current attempt belongs to, if a `CurrentItem` is
 * provided (a checkpointed run); `keyAt` also reads a `CurrentRun`.
 *
 * @since 0.1.0
 * @category keys
 */
export const key: Effect.Effect<Option.Option<string>> = Effect.map(Effect.serviceOption(CurrentItem), Option.map(keyOf))

/**
 * The key of the item a task was called with at `index`: `CurrentItem`'s if
 * one is provided, else the item `String(index)` of `CurrentRun`, if any.
 *
 * @since 0.1.0
 * @category keys
 */
export const keyAt = (index: number): Effect.Effect<Option.Option<string>> =>
  Effect.contextWith((context: Context.Context<never>) => {
    const item = Context.getOption(context, CurrentItem)
    if (Option.isSome(item)) return Option.some(keyOf(item.value))
    return Option.map(Context.getOption(context, CurrentRun), ({ runId }) => keyOf({ runId, itemKey: String(index) }))
  })
