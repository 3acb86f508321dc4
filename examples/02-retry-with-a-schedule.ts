/**
 * Retries driven by a `Schedule` over classified failures.
 *
 * Item 1 fails with `RateLimited{retryAfter: 300 ms}`, then with `Transient`,
 * then succeeds. `RetryPolicy.layer` (the default policy, tuned) waits exactly
 * the `retryAfter` of a rate-limited attempt and backs off exponentially with
 * jitter otherwise; `RetryPolicy.layerSchedule` takes any `Schedule` over
 * `TaskError`. `Progress.layer` prints every event as it happens: attempts,
 * retries with their class and delay, and the cooldown gate the 429 closed.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Layer, Schedule } from "effect"
import { Batch, Progress, RetryPolicy, TaskError } from "effect-batch"

/** A fresh task each run: item 1 is rate limited, then fails transiently, then succeeds. */
const flaky = () => {
  const attempts = new Map<number, number>()
  return (item: string, index: number) =>
    Effect.gen(function*() {
      const attempt = (attempts.get(index) ?? 0) + 1
      attempts.set(index, attempt)
      yield* Effect.sleep("20 millis")
      if (index === 1 && attempt === 1) {
        return yield* new TaskError.RateLimited({ message: "429 slow down", retryAfter: Duration.millis(300) })
      }
      if (index === 1 && attempt === 2) return yield* new TaskError.Transient({ message: "502 bad gateway", status: 502 })
      return item.toUpperCase()
    })
}

/** Prints each event with the time since the batch started. */
const timeline = Layer.unwrapEffect(Effect.sync(() => {
  const start = Date.now()
  const at = () => `+${String(Date.now() - start).padStart(4)} ms`
  return Progress.layer((event) => {
    switch (event._tag) {
      case "AttemptStarted":
        return Console.log(`${at()}  #${event.index} attempt ${event.attempt} starts`)
      case "Retrying":
        return Console.log(`${at()}  #${event.index} attempt ${event.attempt} failed: ${event.errorClass}, retry in ${Math.round(event.delayMs)} ms`)
      case "GateClosed":
        return Console.log(`${at()}  gate closed for ${event.durationMs} ms (no call of this limiter starts)`)
      case "ItemSucceeded":
        return Console.log(`${at()}  #${event.index} succeeded after ${event.attempts} attempts`)
      default:
        return Effect.void
    }
  })
}))

const items = ["alpha", "beta", "gamma"]

const runWith = (title: string, policy: Layer.Layer<never>) =>
  Effect.gen(function*() {
    yield* Console.log(`\n${title}`)
    const { report } = yield* Batch.run(items, flaky(), { concurrency: 2 }).pipe(
      Effect.provide(Layer.merge(policy, timeline))
    )
    const retries = Object.entries(report.retriesBy).filter(([, n]) => n > 0).map(([tag, n]) => `${tag} ${n}`)
    yield* Console.log(`${report.succeeded}/${report.total} succeeded in ${Math.round(report.wallMs)} ms; retries: ${retries.join(", ")}`)
  })

// The default policy, tuned: a retryAfter is waited exactly; other failures
// back off 100 ms, 200 ms, ... (jittered down by up to half), capped at 400 ms.
const standard = RetryPolicy.layer({ maxAttempts: 4, base: "100 millis", maxDelay: "400 millis" })

// A custom schedule: a fixed 50 ms between attempts, but never sooner than
// the provider's retryAfter plus a 10% margin; at most 3 retries.
const custom = RetryPolicy.layerSchedule(
  Schedule.spaced("50 millis").pipe(
    Schedule.intersect(Schedule.identity<TaskError.TaskError>()),
    Schedule.modifyDelay(([, error], delay) => {
      const after = TaskError.retryAfter(error)
      return after === undefined ? delay : Duration.max(delay, Duration.times(after, 1.1))
    }),
    Schedule.intersect(Schedule.recurs(3))
  )
)

const program = Effect.gen(function*() {
  yield* runWith("RetryPolicy.layer({ maxAttempts: 4, base: \"100 millis\", maxDelay: \"400 millis\" })", standard)
  yield* runWith("RetryPolicy.layerSchedule(spaced 50 ms, at least retryAfter × 1.1, recurs 3)", custom)
})

NodeRuntime.runMain(program)
