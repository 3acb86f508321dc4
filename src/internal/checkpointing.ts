/**
 * The engine's side of durable runs: restores outcomes a `CheckpointStore`
 * holds for a run, and records fresh ones in groups.
 *
 * An item's identity is `CheckpointStore.itemKeyOf(index, item)`: its index
 * plus a hash of the item, so a resumed run whose input changed is caught at
 * the first item that differs (the run fails with a `CheckpointMismatch`
 * rather than mixing two inputs). Succeeded items come back with
 * `source: "checkpoint"`; items that failed with `Permanent` come back failed
 * unless `retryFailed`; everything else (other failures, skipped, never
 * reached) runs again.
 *
 * Outcomes are buffered and written one group per transaction, continuously:
 * a writer fiber lets a group gather for `gatherFor` (25 ms) after its first
 * outcome, writes it, and starts over (group commit), so the checkpoint trails
 * the run by ~25 ms plus a transaction; at `groupSize` (500) waiting, the
 * workers wait for the writer; the rest is written when the run ends or is
 * interrupted. A store that fails ends the run with its `CheckpointError`
 * (through `failed`, which the engine races): a run that cannot record its
 * outcomes must not go on paying for calls it would lose.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { CheckpointOptions } from "../Batch.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as TaskError from "../TaskError.js"
import * as TaskResult from "../TaskResult.js"

type Outcome<B, E> = TaskResult.TaskResult<B, E | TaskError.TaskError>

/** How a checkpointed run can fail. */
export type Failure = CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch

export interface Checkpointing<A, B, E> {
  /**
   * The outcome recorded for this item if it must not run again; otherwise
   * remembers its key and answers `undefined`. A value, not an effect (it is
   * asked once per item): the failure when the item differs from the one
   * recorded at its index, or its recorded value cannot be decoded.
   */
  readonly restore: (index: number, item: A) => Outcome<B, E> | Failure | undefined
  /** The identity of an item of this run that has not settled yet. */
  readonly keyOf: (index: number) => string | undefined
  readonly runId: string
  /** Buffers an outcome of this run, with what its call cost; an effect when the buffer is due for writing. */
  readonly record: (
    result: Outcome<B, E>,
    spent: { readonly usd?: number | undefined, readonly tokens?: number | undefined } | undefined
  ) => Effect.Effect<void> | undefined
  /** Writes what is buffered and marks the run finished, or stopped for `reason`. */
  readonly close: (reason: TaskResult.SkipReason | undefined) => Effect.Effect<void, CheckpointStore.CheckpointError>
  /**
   * Fails once a write in the background (or one a worker waited for) has
   * failed; whoever made that write then waits for the run to be interrupted.
   */
  readonly failed: Deferred.Deferred<never, CheckpointStore.CheckpointError>
}

export const groupSize = 500
/** How long the writer lets a group gather before writing it: fewer, larger transactions. */
export const gatherFor = Duration.millis(25)

/** A `Permanent` failure as it was recorded (the only failures a resumed run keeps). */
const permanentFrom = (recorded: CheckpointStore.OutcomeRecord): TaskError.Permanent =>
  new TaskError.Permanent({
    message: recorded.error?.message ?? "failed in an earlier run",
    ...(recorded.error?.status === undefined ? {} : { status: recorded.error.status }),
    ...(recorded.error?.code === undefined ? {} : { code: recorded.error.code })
  })

const errorRecord = (error: unknown): NonNullable<CheckpointStore.OutcomeRecord["error"]> => {
  const e = error as { readonly _tag?: unknown, readonly message?: unknown, readonly status?: unknown, readonly code?: unknown }
  return {
    tag: typeof e?._tag === "string" ? e._tag : "Error",
    message: typeof e?.message === "string" ? e.message : String(error),
    ...(typeof e?.status === "number" ? { status: e.status } : {}),
    ...(typeof e?.code === "string" ? { code: e.code } : {})
  }
}

export const make = <A, B, E>(
  options: CheckpointOptions<B>,
  total: number | undefined
): Effect.Effect<Checkpointing<A, B, E>, Failure, Scope.Scope> =>
  Effect.gen(function*() {
    const storeOption = yield* Effect.serviceOption(CheckpointStore.CheckpointStore)
    if (Option.isNone(storeOption)) {
      // A program without the layer is wrong whatever the data: a defect, as a missing service is.
      return yield* Effect.die(new Cause.RuntimeException(
        "Batch: the checkpoint option needs a CheckpointStore layer (CheckpointStore.layerMemory, SqlCheckpointStore.layer)"
      ))
    }
    const store = storeOption.value
    const runId = options.runId
    yield* store.open(runId, {
      fingerprint: options.fingerprint ?? "",
      ...(total === undefined ? {} : { total }),
      ...(options.meta === undefined ? {} : { meta: options.meta })
    })
    const recorded = yield* store.load(runId)
    const byIndex = new Map<number, CheckpointStore.OutcomeRecord>()
    for (const record of recorded.values()) byIndex.set(record.index, record)

    const schema = options.schema
    const decode = schema === undefined ? (json: unknown) => json as B : Schema.decodeUnknownSync(schema)
    const encode = schema === undefined ? (value: B): unknown => value : Schema.encodeSync(schema)

    /** Keys of items of this run that have not settled yet. */
    const pendingKeys = new Map<number, string>()
    let buffer: Array<CheckpointStore.OutcomeRecord> = []
    const lock = yield* Effect.makeSemaphore(1)
    const write: Effect.Effect<void, CheckpointStore.CheckpointError> = lock.withPermits(1)(Effect.suspend(() => {
      if (buffer.length === 0) return Effect.void
      const group = buffer
      buffer = []
      return store.record(runId, group)
    }))
    const failed = yield* Deferred.make<never, CheckpointStore.CheckpointError>()
    // Written while the run goes on: a failure ends the run (the engine races `failed`), and nothing after it runs.
    const flush: Effect.Effect<void> = Effect.catchAll(write, (error) => Effect.zipRight(Deferred.fail(failed, error), Effect.never))

    // The writer: one transaction at a time, of everything settled meanwhile; ends with the batch's scope.
    const pending = yield* Effect.makeLatch(false)
    yield* Effect.forkScoped(Effect.forever(
      pending.await.pipe(Effect.zipRight(Effect.sleep(gatherFor)), Effect.zipRight(pending.close), Effect.zipRight(flush))
    ))

    const restore = (index: number, item: A): Outcome<B, E> | Failure | undefined => {
      const key = CheckpointStore.itemKeyOf(index, item)
      const prior = byIndex.get(index)
      if (prior !== undefined) {
        byIndex.delete(index)
        if (prior.itemKey !== key) {
          return new CheckpointStore.CheckpointMismatch({ runId, expected: prior.itemKey, found: key })
        }
        if (prior.status === "succeeded") {
          let value: B
          try {
            value = decode(prior.value)
          } catch (error) {
            const reason = error instanceof Error ? error.message : String(error)
            const cause = `the value recorded for item ${index} does not decode with the checkpoint's schema: ${reason}`
            return new CheckpointStore.CheckpointError({ operation: "load", runId, cause })
          }
          return TaskResult.succeeded(index, value, 0, 0, "checkpoint")
        }
        if (prior.status === "failed" && prior.errorClass === "Permanent" && options.retryFailed !== true) {
          return TaskResult.failed(index, permanentFrom(prior), "Permanent", 0, 0)
        }
      }
      pendingKeys.set(index, key)
      return undefined
    }

    const record = (
      result: Outcome<B, E>,
      spent: { readonly usd?: number | undefined, readonly tokens?: number | undefined } | undefined
    ): Effect.Effect<void> | undefined => {
      const itemKey = pendingKeys.get(result.index)
      if (itemKey === undefined || result._tag === "Skipped") return undefined
      pendingKeys.delete(result.index)
      // `recordedAt` is left to the store, which reads its clock.
      const base = { itemKey, index: result.index, attempts: result.attempts, durationMs: result.durationMs }
      if (result._tag === "Succeeded") {
        buffer.push({
          ...base,
          status: "succeeded",
          value: encode(result.value),
          ...(spent?.usd === undefined ? {} : { cost: spent.usd }),
          ...(spent?.tokens === undefined ? {} : { tokens: spent.tokens })
        })
      } else {
        buffer.push({ ...base, status: "failed", error: errorRecord(result.error), errorClass: result.errorClass })
      }
      if (buffer.length === 1) pending.unsafeOpen()
      return buffer.length >= groupSize ? flush : undefined
    }

    const close = (reason: TaskResult.SkipReason | undefined) =>
      Effect.zipRight(
        write,
        reason === undefined ? store.setState(runId, "finished") : store.setState(runId, "stopped", reason)
      )

    return { restore, record, close, failed, runId, keyOf: (index: number) => pendingKeys.get(index) }
  })
