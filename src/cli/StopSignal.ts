/**
 * How the CLI is asked to stop: the first SIGINT or SIGTERM asks for a
 * graceful stop (a run admits nothing more and lets its calls in flight
 * finish, within a grace period), the second for a stop now (the calls in
 * flight are interrupted and their HTTP requests aborted).
 *
 * `layerProcess` listens to the process's signals for as long as the layer
 * lives; without a layer nothing ever asks (tests provide `layerManual`).
 * Signals within `coalesceWithin` (1 s) of the first count as that first
 * one: a Ctrl-C reaches every process of the terminal's foreground group, and
 * the programs the CLI may be started under pass it on once more (npm to its
 * child; tsx to its child, again 30 ms later when the child has not yet told
 * it that it got the signal), so one keypress can arrive two or three times.
 *
 * What it does not promise: a third signal is not special; the process ends
 * when the command's effect does. Under the `tsx` command (not `node
 * --import tsx`), tsx kills the process when it does not acknowledge a signal
 * within 30 ms twice, which a machine starved of CPU can cause.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
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

/**
 * How long after a first signal further ones count as the same request.
 *
 * @since 0.1.0
 * @category constants
 */
export const coalesceWithin: Duration.Duration = Duration.seconds(1)

const make = Effect.gen(function*() {
  const graceful = yield* Deferred.make<void>()
  const now = yield* Deferred.make<void>()
  let requests = 0
  const unsafeRequest = () => {
    Deferred.unsafeDone(++requests === 1 ? graceful : now, Exit.void)
  }
  return {
    graceful: Deferred.await(graceful),
    now: Deferred.await(now),
    request: Effect.sync(unsafeRequest),
    unsafeRequest
  }
})

/**
 * A signal handler over `requests`: the first signal asks for a graceful
 * stop, signals within `coalesceWithin` of it are dropped, the next one asks
 * for a stop now. `now` reads the clock in milliseconds.
 *
 * @since 0.1.0
 * @category constructors
 */
export const signalHandler = (request: () => void, now: () => number): () => void => {
  let first: number | undefined
  return () => {
    const at = now()
    if (first === undefined) first = at
    else if (at - first < Duration.toMillis(coalesceWithin)) return
    request()
  }
}

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
    const clock = yield* Effect.clock
    const onSignal = signalHandler(requests.unsafeRequest, () => clock.unsafeCurrentTimeMillis())
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
