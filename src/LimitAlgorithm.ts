/**
 * Pure concurrency-limit algorithms: samples in, limit out.
 *
 * Background (Little's law): a provider serving `C` requests at once with a
 * latency `L` has a throughput of `C / L`. Past its capacity, extra concurrency
 * buys only queueing — latency rises and then requests are dropped (503, 429,
 * timeouts). An algorithm watches every attempt's latency and whether it was
 * dropped, and moves the limit towards the most concurrency the provider takes
 * without queueing. After Netflix's concurrency-limits: the algorithm knows
 * nothing about enforcement; `ConcurrencyLimiter` applies the limit.
 *
 * Every algorithm keeps its limit within `[min, max]` (validated at
 * construction; a bad option throws `IllegalArgumentException` naming it).
 * What they do not promise: a stable limit under a workload that never reaches
 * the provider's capacity — when the batch is not using the limit ("app
 * limited"), the limit stays where it is.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"

/**
 * What one attempt tells the algorithm.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sample {
  /** Clock millis at which the attempt started (after rate-limit waits). */
  readonly startedAt: number
  readonly latencyMs: number
  /** Attempts in flight when this one started, itself included. */
  readonly inFlight: number
  /** The attempt was dropped: `RateLimited`, `Overloaded` or `Timeout`. */
  readonly dropped: boolean
  /**
   * How long the provider says it spent on the attempt, waiting for a slot
   * included (OpenAI's `openai-processing-ms`, reported with
   * `ConcurrencyLimiter.reportProviderTime`), when it says. Unlike
   * `latencyMs` it holds none of the client's own delays (a busy event loop,
   * the network).
   */
  readonly providerMs?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface LimitAlgorithm<S> {
  readonly name: string
  readonly min: number
  readonly max: number
  readonly initial: S
  /** The limit in a state: an integer in `[min, max]`. */
  readonly limit: (state: S) => number
  readonly update: (state: S, sample: Sample) => S
}

const invalid = (algorithm: string, what: string): never => {
  throw new Cause.IllegalArgumentException(`LimitAlgorithm.${algorithm}: ${what}`)
}

const checkBounds = (algorithm: string, min: number, max: number, initial: number) => {
  if (!Number.isInteger(min) || min < 1) invalid(algorithm, `min must be an integer ≥ 1, got ${min}`)
  if (!Number.isInteger(max) || max < min) invalid(algorithm, `max must be an integer ≥ min (${min}), got ${max}`)
  if (!Number.isInteger(initial) || initial < min || initial > max) {
    invalid(algorithm, `initial must be an integer in [${min}, ${max}], got ${initial}`)
  }
}

const clamp = (value: number, min: number, max: number) => Math.max(min, Math.min(max, value))

/**
 * Runs the limit through a sequence of samples (for tests and simulations).
 *
 * @since 0.1.0
 * @category utils
 */
export const replay = <S>(algorithm: LimitAlgorithm<S>, samples: Iterable<Sample>): ReadonlyArray<number> => {
  const limits: Array<number> = []
  let state = algorithm.initial
  for (const sample of samples) {
    state = algorithm.update(state, sample)
    limits.push(algorithm.limit(state))
  }
  return limits
}

// ---------------------------------------------------------------------------
// fixed
// ---------------------------------------------------------------------------

/**
 * A limit that never moves. `limit`: integer ≥ 1.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fixed = (limit: number): LimitAlgorithm<number> => {
  checkBounds("fixed", 1, Math.max(1, limit), limit)
  return { name: "fixed", min: limit, max: limit, initial: limit, limit: (s) => s, update: (s) => s }
}

// ---------------------------------------------------------------------------
// aimd
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface AimdOptions {
  /** Starting limit. Default `10`. */
  readonly initial?: number | undefined
  /** Default `1`. */
  readonly min?: number | undefined
  /** Default `200`. */
  readonly max?: number | undefined
  /** Added per limit's worth of successes taken under load (about once per round trip). > 0. Default `1`. */
  readonly increase?: number | undefined
  /** Multiplier on a drop, in (0, 1). Default `0.9`. */
  readonly backoffRatio?: number | undefined
  /** A success slower than this counts as a drop. Default `Infinity` (never). */
  readonly timeoutMs?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface AimdState {
  readonly limit: number
  /** Samples that started before this moment do not cause another decrease. */
  readonly decreasedAt: number
}

/**
 * Additive increase, multiplicative decrease, after Netflix `AIMDLimit` and
 * TCP congestion avoidance: every success taken while at least half the limit
 * was in flight adds `increase / limit` (so the limit grows by `increase` per
 * round trip, not per success — Netflix's +1 per success outruns its own
 * decreases at a few hundred calls per second), and a drop multiplies by
 * `backoffRatio`. A burst of drops from attempts that all started before the
 * last decrease counts once (as TCP reacts once per window), so one overload
 * does not collapse the limit to `min`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const aimd = (options: AimdOptions = {}): LimitAlgorithm<AimdState> => {
  const min = options.min ?? 1
  const max = options.max ?? 200
  const initial = options.initial ?? clamp(10, min, max)
  const increase = options.increase ?? 1
  const backoffRatio = options.backoffRatio ?? 0.9
  const timeoutMs = options.timeoutMs ?? Number.POSITIVE_INFINITY
  checkBounds("aimd", min, max, initial)
  if (!(increase > 0)) invalid("aimd", `increase must be > 0, got ${increase}`)
  if (!(backoffRatio > 0 && backoffRatio < 1)) invalid("aimd", `backoffRatio must be in (0, 1), got ${backoffRatio}`)
  if (!(timeoutMs > 0)) invalid("aimd", `timeoutMs must be > 0, got ${timeoutMs}`)
  return {
    name: "aimd",
    min,
    max,
    initial: { limit: initial, decreasedAt: Number.NEGATIVE_INFINITY },
    limit: (s) => clamp(Math.floor(s.limit), min, max),
    update: (s, sample) => {
      if (sample.dropped || sample.latencyMs > timeoutMs) {
        if (sample.startedAt < s.decreasedAt) return s
        return { limit: clamp(s.limit * backoffRatio, min, max), decreasedAt: sample.startedAt + sample.latencyMs }
      }
      if (sample.inFlight * 2 >= Math.floor(s.limit)) {
        return { limit: clamp(s.limit + increase / Math.max(1, s.limit), min, max), decreasedAt: s.decreasedAt }
      }
      return s
    }
  }
}

// ---------------------------------------------------------------------------
// gradient
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface GradientOptions {
  /** Starting limit. Default `20`. */
  readonly initial?: number | undefined
  /** Default `1`. */
  readonly min?: number | undefined
  /** Default `200`. */
  readonly max?: number | undefined
  /** Weight of each new estimate, in (0, 1]. Default `0.2`. */
  readonly smoothing?: number | undefined
  /** How much slower than the long-term latency is still "no queueing", ≥ 1. Default `1.5`. */
  readonly rttTolerance?: number | undefined
  /** Samples in the long-term latency average (and the baseline's memory), integer ≥ 1. Default `600`. */
  readonly longWindow?: number | undefined
  /** Headroom added to the limit each sample, from the current limit. Default `() => 4`. */
  readonly queueSize?: ((limit: number) => number) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface GradientState {
  readonly estimate: number
  readonly longRtt: number
  /** The no-load latency: the lowest seen, relaxing slowly towards `longRtt`. */
  readonly minRtt: number
  readonly samples: number
  readonly decreasedAt: number
}

/**
 * Latency-gradient limit after Netflix's `Gradient2Limit`: it compares each
 * attempt's latency with a baseline and shrinks the limit by the ratio
 * `rttTolerance × baseline / short` (never below half) once latency rises,
 * otherwise grows by `queueSize`, smoothing every step. Where we differ:
 *
 * - the baseline is the lowest latency seen, relaxing towards the long-term
 *   average by `1 / (10 × longWindow)` per sample, rather than the average
 *   itself: Gradient2's average follows the latency the limit itself causes,
 *   so under steady queueing its limit drifts upwards without end (measured:
 *   3× the capacity of a 16-slot service after 4 000 calls); with the
 *   minimum it settles where latency is `rttTolerance` × the no-load latency;
 * - a drop counts as the strongest slowdown (ratio ½), once per window, and
 *   dropped attempts do not feed the latency averages;
 * - where the provider says how long it spent (`Sample.providerMs`), that is
 *   the latency: a client slowed by its own CPU load is not a provider
 *   queueing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const gradient = (options: GradientOptions = {}): LimitAlgorithm<GradientState> => {
  const min = options.min ?? 1
  const max = options.max ?? 200
  const initial = options.initial ?? clamp(20, min, max)
  const smoothing = options.smoothing ?? 0.2
  const tolerance = options.rttTolerance ?? 1.5
  const longWindow = options.longWindow ?? 600
  const queueSize = options.queueSize ?? (() => 4)
  checkBounds("gradient", min, max, initial)
  if (!(smoothing > 0 && smoothing <= 1)) invalid("gradient", `smoothing must be in (0, 1], got ${smoothing}`)
  if (!(tolerance >= 1)) invalid("gradient", `rttTolerance must be ≥ 1, got ${tolerance}`)
  if (!Number.isInteger(longWindow) || longWindow < 1) {
    invalid("gradient", `longWindow must be an integer ≥ 1, got ${longWindow}`)
  }
  const warmup = Math.min(10, longWindow)
  const emaFactor = 2 / (longWindow + 1)
  const relax = 1 / (10 * longWindow)
  const step = (s: GradientState, ratio: number): number => {
    const target = s.estimate * ratio + queueSize(s.estimate)
    return clamp(s.estimate * (1 - smoothing) + target * smoothing, min, max)
  }
  return {
    name: "gradient",
    min,
    max,
    initial: {
      estimate: initial,
      longRtt: 0,
      minRtt: Number.POSITIVE_INFINITY,
      samples: 0,
      decreasedAt: Number.NEGATIVE_INFINITY
    },
    limit: (s) => clamp(Math.floor(s.estimate), min, max),
    update: (s, sample) => {
      if (sample.dropped) {
        if (sample.startedAt < s.decreasedAt) return s
        return { ...s, estimate: step(s, 0.5), decreasedAt: sample.startedAt + sample.latencyMs }
      }
      // What the provider says it spent, where it says: the client's own delays are not its queueing.
      const shortRtt = Math.max(sample.providerMs ?? sample.latencyMs, 1e-3)
      const samples = s.samples + 1
      // A plain mean during warm-up, an exponential average after (Netflix ExpAvgMeasurement).
      let longRtt = samples <= warmup
        ? s.longRtt + (shortRtt - s.longRtt) / samples
        : s.longRtt * (1 - emaFactor) + shortRtt * emaFactor
      // After a long overload, pull the baseline down faster than the average would.
      if (longRtt / shortRtt > 2) longRtt *= 0.95
      const relaxed = s.minRtt === Number.POSITIVE_INFINITY
        ? shortRtt
        : s.minRtt + Math.max(0, longRtt - s.minRtt) * relax
      const minRtt = Math.min(shortRtt, relaxed)
      const next = { ...s, longRtt, minRtt, samples }
      if (sample.inFlight < s.estimate / 2) return next // app-limited: no evidence either way
      const ratio = Math.max(0.5, Math.min(1, (tolerance * minRtt) / shortRtt))
      return { ...next, estimate: step(s, ratio) }
    }
  }
}

/**
 * The adaptive limit we recommend for LLM and HTTP APIs, and what the CLI
 * runs with: `gradient` from 20 up to 128, smoothed for a few hundred samples
 * per second (`smoothing: 0.05`). `gradient()`'s own defaults follow
 * Netflix's (start at 20, `smoothing: 0.2`), which react to every noisy
 * latency at the rates a batch reaches.
 *
 * @since 0.1.0
 * @category constructors
 */
export const recommended = (): LimitAlgorithm<GradientState> => gradient({ initial: 20, max: 128, smoothing: 0.05 })
