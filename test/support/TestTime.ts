/**
 * Runs an effect to completion on the `TestClock`.
 *
 * `TestClock.adjust(d)` fires the sleeps that are scheduled by the time it
 * looks; a fiber that was still busy (a loaded machine) and schedules its sleep
 * a moment later would wait forever, and the test would hang at its join. So
 * this polls the fiber on the live clock and moves test time on again only when
 * the fiber has been idle for a while without finishing.
 */
import { Duration, Effect, Fiber, Option, TestClock, TestServices } from "effect"

export const runOnTestClock = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  step: Duration.DurationInput = "1 days",
  maxSteps = 20
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < maxSteps; i++) {
      yield* TestClock.adjust(step)
      for (let poll = 0; poll < 50; poll++) {
        const exit = yield* Fiber.poll(fiber)
        if (Option.isSome(exit)) return yield* exit.value
        yield* TestServices.provideLive(Effect.sleep("10 millis"))
      }
    }
    return yield* Effect.dieMessage(`still running after ${maxSteps} × ${Duration.format(step)} of test time`)
  })
