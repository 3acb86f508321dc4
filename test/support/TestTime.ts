/**
 * Runs effects to completion on the `TestClock`.
 *
 * `TestClock.adjust(d)` fires the sleeps that are scheduled by the time it
 * looks; a fiber that was still busy (a loaded machine) and schedules its sleep
 * a moment later would wait forever, and the test would hang at its join. So
 * these poll the fiber on the live clock and move test time on again only when
 * the fiber has been idle for a while without finishing.
 */
import { Chunk, Duration, Effect, Fiber, Option, TestClock, TestServices } from "effect"

/** Moves test time by `step` until `fiber` is done (at most `maxSteps` times), and joins it. */
export const joinOnTestClock = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  step: Duration.DurationInput = "1 days",
  maxSteps = 20
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    for (let i = 0; i < maxSteps; i++) {
      // Before moving time, let the fiber reach a sleep: forked a moment ago on a busy machine, it may not have run
      // yet, and its first step would then see the time after the move (seen: a workflow's start recorded at
      // 1 000 ms instead of 0).
      for (let poll = 0; poll < 50; poll++) {
        if (Option.isSome(yield* Fiber.poll(fiber)) || Chunk.isNonEmpty(yield* TestClock.sleeps())) break
        yield* TestServices.provideLive(Effect.sleep("10 millis"))
      }
      yield* TestClock.adjust(step)
      for (let poll = 0; poll < 50; poll++) {
        const exit = yield* Fiber.poll(fiber)
        if (Option.isSome(exit)) return yield* exit.value
        yield* TestServices.provideLive(Effect.sleep("10 millis"))
      }
    }
    return yield* Effect.dieMessage(`still running after ${maxSteps} × ${Duration.format(step)} of test time`)
  })

/** Forks `effect` and joins it on the test clock. */
export const runOnTestClock = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  step: Duration.DurationInput = "1 days",
  maxSteps = 20
): Effect.Effect<A, E, R> => Effect.flatMap(Effect.fork(effect), (fiber) => joinOnTestClock(fiber, step, maxSteps))
