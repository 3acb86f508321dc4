/**
 * How the CLI is asked to stop: the first SIGINT or SIGTERM asks for a
 * graceful stop (a run admits nothing more and lets its calls in flight
 * finish, within a grace period), the second for a stop now (the calls in
 * flight are interrupted and their HTTP requests aborted).
 *
 * `layerProcess` listens to the process's signals for as long as the layer
 * lives; without a layer nothing ever asks (tests provide `layerManual`).
 * What it does not promise: a third signal is not special; the process ends
 * when the command's effect does.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"

/**
 * @since 0.1.0
 * @category models
 */
export interface Requests {
  /** Completes on the first request to stop. */
  readonly graceful: Effect.Effect<void>
  /** Completes on the second. */
  readonly now: Effect.Effect<void>
  /** Asks once more: graceful first, then now. */
  readonly request: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class StopSignal extends Context.Tag("effect-batch/cli/StopSignal")<StopSignal, Requests>() {}

const make = Effect.gen(function*() {
  const graceful = yield* Deferred.make<void>()
  const now = yield* Deferred.make<void>()
  let requests = 0
  const unsafeRequest = () => {
    Deferred.unsafeDone(++requests === 1 ? graceful : now, Exit.void)
  }
  return { graceful: Deferred.await(graceful), now: Deferred.await(now), request: Effect.sync(unsafeRequest), unsafeRequest }
})

/**
 * Stop requests made with `request` (tests).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerManual: Layer.Layer<StopSignal> = Layer.effect(StopSignal, make)

/**
 * Stop requests from SIGINT and SIGTERM.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerProcess: Layer.Layer<StopSignal> = Layer.scoped(
  StopSignal,
  Effect.gen(function*() {
    const requests = yield* make
    const onSignal = () => requests.unsafeRequest()
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        process.on("SIGINT", onSignal)
        process.on("SIGTERM", onSignal)
      }),
      () =>
        Effect.sync(() => {
          process.off("SIGINT", onSignal)
          process.off("SIGTERM", onSignal)
        })
    )
    return requests
  })
)

/**
 * The stop requests in context, or ones that never come.
 *
 * @since 0.1.0
 * @category accessors
 */
export const current: Effect.Effect<Requests> = Effect.map(
  Effect.serviceOption(StopSignal),
  (option) => (option._tag === "Some" ? option.value : { graceful: Effect.never, now: Effect.never, request: Effect.void })
)
