/**
 * How a batch retries a failed attempt, as a `Schedule` over classified
 * failures.
 *
 * The engine classifies each failure (see `TaskError.classify`) and steps the
 * item's schedule with it: a `Continue` decision gives the delay before the
 * next attempt, `Done` makes the failure final. The default schedule backs off
 * exponentially with jitter up to a cap, waits exactly a `RateLimited` or
 * `Overloaded` failure's `retryAfter` when it has one, and stops after
 * `maxAttempts` failed attempts — not counting `RateLimited` ones: a 429 is
 * the provider saying "later", not the item failing, so an item retries
 * those for `maxRateLimitWait` from its first one, however many it gets.
 *
 * Whatever the schedule says, the engine never retries `Permanent` or
 * `QuotaExhausted`, and defects are not failures at all. While an item waits to
 * retry it holds no concurrency permit, and its next attempt goes back through
 * the rate limiter (and its cooldown gate) like a new one. What it does not
 * promise: a custom schedule's delays are taken as they are, without a cap.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Interval from "effect/ScheduleInterval"
import * as Intervals from "effect/ScheduleIntervals"
import * as TaskError from "./TaskError.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  /** Stepped once per failed attempt with the classified failure. */
  readonly schedule: Schedule.Schedule<unknown, TaskError.TaskError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Attempts per item, the first included, that failed other than
   * `RateLimited`. Integer ≥ 1. Default `5`.
   */
  readonly maxAttempts?: number | undefined
  /**
   * How long, from an item's first `RateLimited` failure, its `RateLimited`
   * failures are retried (they do not count toward `maxAttempts`); after
   * that the next one is final. `0`: never retried; `Infinity`: until the
   * item's `deadline`, if any. Default `"10 minutes"`.
   */
  readonly maxRateLimitWait?: Duration.DurationInput | undefined
  /** Delay before the second attempt. > 0. Default `"500 millis"`. */
  readonly base?: Duration.DurationInput | undefined
  /** Growth per attempt. ≥ 1. Default `2`. */
  readonly factor?: number | undefined
  /** Cap on any computed backoff (not on a provider's `retryAfter`). Default `"30 seconds"`. */
  readonly maxDelay?: Duration.DurationInput | undefined
  /**
   * Fraction of each backoff drawn at random, in [0, 1]: the delay lies in
   * `[(1 - jitter) × d, d]` where `d = min(maxDelay, base × factor^n)`.
   * Default `0.5`.
   */
  readonly jitter?: number | undefined
}

/**
 * The defaults of `make`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaults = {
  maxAttempts: 5,
  maxRateLimitWait: Duration.minutes(10),
  base: Duration.millis(500),
  factor: 2,
  maxDelay: Duration.seconds(30),
  jitter: 0.5
} as const

const invalid = (what: string): never => {
  throw new Cause.IllegalArgumentException(`RetryPolicy: ${what}`)
}

/**
 * The default policy, tuned by `options` (each validated; a bad value throws
 * `IllegalArgumentException` naming it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Policy => {
  const maxAttempts = options.maxAttempts ?? defaults.maxAttempts
  const base = Duration.decode(options.base ?? defaults.base)
  const factor = options.factor ?? defaults.factor
  const maxDelay = Duration.decode(options.maxDelay ?? defaults.maxDelay)
  const jitter = options.jitter ?? defaults.jitter
  const maxRateLimitWait = Duration.decode(options.maxRateLimitWait ?? defaults.maxRateLimitWait)
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) invalid(`maxAttempts must be an integer ≥ 1, got ${maxAttempts}`)
  if (!(Duration.toMillis(base) > 0)) invalid(`base must be > 0, got ${Duration.format(base)}`)
  if (!(factor >= 1)) invalid(`factor must be ≥ 1, got ${factor}`)
  if (!(Duration.toMillis(maxDelay) >= Duration.toMillis(base))) {
    invalid(`maxDelay must be ≥ base, got ${Duration.format(maxDelay)} < ${Duration.format(base)}`)
  }
  if (!(jitter >= 0 && jitter <= 1)) invalid(`jitter must be in [0, 1], got ${jitter}`)
  const schedule = Schedule.exponential(base, factor).pipe(
    Schedule.union(Schedule.spaced(maxDelay)), // union takes the smaller delay: the cap
    Schedule.jitteredWith({ min: 1 - jitter, max: 1 }),
    Schedule.intersect(Schedule.identity<TaskError.TaskError>()),
    Schedule.modifyDelay(([, error], computed) => TaskError.retryAfter(error) ?? computed),
    Schedule.whileInput((error: TaskError.TaskError) => !TaskError.isFinal(error._tag)),
    Schedule.intersect(attemptsAndPatience(maxAttempts, Duration.toMillis(maxRateLimitWait))),
    Schedule.asVoid
  )
  return { schedule }
}

interface Spent {
  /** Failed attempts that count toward `maxAttempts`. */
  readonly failures: number
  /** When the item's first `RateLimited` failure came, if one did. */
  readonly rateLimitedSince: number | undefined
}

/**
 * Continues (adding no delay) while the item has failed fewer than
 * `maxAttempts` times other than `RateLimited`, and, for a `RateLimited`
 * failure, while less than `patienceMillis` has passed since its first one.
 * (`Schedule.recurs` counts every failure alike: with it, a burst of 429s
 * used up an item's attempts within ~60 ms and lost it.)
 */
const attemptsAndPatience = (maxAttempts: number, patienceMillis: number): Schedule.Schedule<void, TaskError.TaskError> =>
  Schedule.makeWithState<Spent, TaskError.TaskError, void>(
    { failures: 0, rateLimitedSince: undefined },
    (now, error, spent) => {
      const go = ScheduleDecision.continueWith(Interval.after(now))
      if (error._tag === "RateLimited") {
        const since = spent.rateLimitedSince ?? now
        return Effect.succeed([{ ...spent, rateLimitedSince: since }, undefined, now - since < patienceMillis ? go : ScheduleDecision.done])
      }
      const failures = spent.failures + 1
      return Effect.succeed([{ ...spent, failures }, undefined, failures < maxAttempts ? go : ScheduleDecision.done])
    }
  )

/**
 * A policy from any schedule over classified failures, e.g.
 * `Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(3)))`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSchedule = <Out>(schedule: Schedule.Schedule<Out, TaskError.TaskError>): Policy => ({
  schedule: Schedule.asVoid(schedule) as Schedule.Schedule<unknown, TaskError.TaskError>
})

/**
 * Never retries: every failure is final after one attempt.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Policy = { schedule: Schedule.stop }

/**
 * The retry policy batches use; `make()` unless a layer provides another.
 *
 * @since 0.1.0
 * @category tags
 */
export class RetryPolicy extends Context.Reference<RetryPolicy>()("effect-batch/RetryPolicy", {
  defaultValue: (): Policy => make()
}) {}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never> => Layer.succeed(RetryPolicy, make(options))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerSchedule = <Out>(schedule: Schedule.Schedule<Out, TaskError.TaskError>): Layer.Layer<never> =>
  Layer.succeed(RetryPolicy, fromSchedule(schedule))

/**
 * The state of one item's schedule between attempts.
 *
 * @since 0.1.0
 * @category models
 */
export type State = { readonly _state: unknown }

/**
 * The state before the first failure.
 *
 * @since 0.1.0
 * @category stepping
 */
export const initial = (policy: Policy): State => ({ _state: policy.schedule.initial })

/**
 * Steps the schedule with a failure at `nowMillis`: the delay before the next
 * attempt and the new state, or `undefined` when the failure is final (the
 * schedule is done, or the failure is `Permanent` / `QuotaExhausted`).
 *
 * @since 0.1.0
 * @category stepping
 */
export const step = (
  policy: Policy,
  state: State,
  error: TaskError.TaskError,
  nowMillis: number
): Effect.Effect<{ readonly state: State, readonly delayMillis: number } | undefined> =>
  TaskError.isFinal(error._tag)
    ? Effect.succeed(undefined)
    : Effect.map(policy.schedule.step(nowMillis, error, state._state), ([next, , decision]) =>
        ScheduleDecision.isDone(decision)
          ? undefined
          : { state: { _state: next }, delayMillis: Math.max(0, Intervals.start(decision.intervals) - nowMillis) })
