/**
 * `effect-batch simulate`: serves the simulated OpenAI-compatible provider
 * (`Simulator`) on 127.0.0.1 until interrupted, and prints its base URL
 * (`http://127.0.0.1:PORT/v1`) as the first line of stdout, so scripts and
 * benchmarks can parse it. A summary of what it served goes to stderr when
 * it stops.
 *
 * Flags: `--port N` (default 0: a free port), `--rpm N`, `--tpm N`,
 * `--capacity N`, `--max-queue N`, `--failure-rate X` (0–1),
 * `--latency-ms N`, `--jitter X` (σ of the lognormal latency factor),
 * `--seed N`, `--api-key KEY`. A flag not given keeps the `Simulator`'s
 * default (unlimited rates and capacity, no failures, 50 ms, no key).
 *
 * The same flags, prefixed `--sim-`, tune the simulator `run --simulate`
 * starts, whose defaults are the `demo` profile instead: rate-limited, flaky
 * and capacity-limited, the conditions the toolkit is built for.
 *
 * What it does not promise: the port is bound on loopback only; invalid
 * values are reported as the `Simulator` validates them (exit code 2).
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Simulator from "../llm/Simulator.js"
import * as SimulatorServer from "../llm/SimulatorServer.js"
import { UsageError } from "./CliError.js"
import * as StopSignal from "./StopSignal.js"

/**
 * The provider `run --simulate` talks to: 3 000 requests per minute, 3 % of
 * calls failing with a 5xx, 24 requests served at once with 24 more queued
 * (then `503 overloaded`), 50 ms per call with a lognormal jitter.
 *
 * @since 0.1.0
 * @category profiles
 */
export const demo: Simulator.Options = {
  requestsPerMinute: 3_000,
  failureRate: 0.03,
  capacity: 24,
  maxQueue: 24,
  latency: { baseMs: 50, jitter: 0.25 }
}

/**
 * The simulator flags, with names prefixed by `prefix`.
 *
 * @since 0.1.0
 * @category flags
 */
export const flags = (prefix: string) => {
  const flag = <A>(options: Options.Options<A>, pseudoName: string, description: string) =>
    options.pipe(Options.withPseudoName(pseudoName), Options.withDescription(description), Options.optional)
  return Options.all({
    rpm: flag(Options.float(`${prefix}rpm`), "N", "Requests per minute the provider allows."),
    tpm: flag(Options.float(`${prefix}tpm`), "N", "Tokens per minute the provider allows."),
    capacity: flag(Options.integer(`${prefix}capacity`), "N", "Requests served at once."),
    maxQueue: flag(Options.integer(`${prefix}max-queue`), "N", "Requests that may wait for a slot; one more gets 503 overloaded."),
    failureRate: flag(Options.float(`${prefix}failure-rate`), "X", "Probability (0-1) that a served request fails with 500, 502 or 503."),
    latencyMs: flag(Options.float(`${prefix}latency-ms`), "MS", "Service time of a request, in ms."),
    jitter: flag(Options.float(`${prefix}jitter`), "SIGMA", "Sigma of the lognormal factor on the service time (0: exact)."),
    seed: flag(Options.integer(`${prefix}seed`), "N", "Seed of every random draw."),
    apiKey: flag(Options.text(`${prefix}api-key`), "KEY", "Require this bearer token.")
  })
}

/**
 * @since 0.1.0
 * @category flags
 */
export interface Flags {
  readonly rpm: Option.Option<number>
  readonly tpm: Option.Option<number>
  readonly capacity: Option.Option<number>
  readonly maxQueue: Option.Option<number>
  readonly failureRate: Option.Option<number>
  readonly latencyMs: Option.Option<number>
  readonly jitter: Option.Option<number>
  readonly seed: Option.Option<number>
  readonly apiKey: Option.Option<string>
}

/**
 * `base` with the flags that were given on top.
 *
 * @since 0.1.0
 * @category flags
 */
export const optionsOf = (given: Flags, base: Simulator.Options = {}): Simulator.Options => {
  const options: { -readonly [K in keyof Simulator.Options]: Simulator.Options[K] } = { ...base }
  const set = <K extends keyof Simulator.Options>(key: K, value: Option.Option<NonNullable<Simulator.Options[K]>>) => {
    if (Option.isSome(value)) options[key] = value.value
  }
  set("requestsPerMinute", given.rpm)
  set("tokensPerMinute", given.tpm)
  set("capacity", given.capacity)
  set("maxQueue", given.maxQueue)
  set("failureRate", given.failureRate)
  set("seed", given.seed)
  set("apiKey", given.apiKey)
  if (Option.isSome(given.latencyMs) || Option.isSome(given.jitter)) {
    options.latency = {
      ...base.latency,
      ...Option.match(given.latencyMs, { onNone: () => ({}), onSome: (baseMs) => ({ baseMs }) }),
      ...Option.match(given.jitter, { onNone: () => ({}), onSome: (jitter) => ({ jitter }) })
    }
  }
  return options
}

const reason = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error) {
    const nested = (error as { readonly cause?: unknown }).cause
    return nested instanceof Error ? `${error.message}: ${nested.message}` : error.message
  }
  return String(error)
}

/**
 * The simulator served on 127.0.0.1:`port` (0: any free port). An invalid
 * option or a port that cannot be bound is a `UsageError`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Simulator.Options, port = 0): Layer.Layer<Simulator.Simulator, UsageError> =>
  SimulatorServer.layer(options, port).pipe(
    Layer.catchAllCause((cause) => Layer.fail(new UsageError({ message: `cannot start the simulator: ${reason(cause)}` })))
  )

const describeOptions = (options: Simulator.Options): string => {
  const parts = [
    options.requestsPerMinute === undefined ? "no request limit" : `${options.requestsPerMinute} requests/min`,
    options.tokensPerMinute === undefined ? undefined : `${options.tokensPerMinute} tokens/min`,
    options.capacity === undefined ? "unlimited capacity" : `capacity ${options.capacity}`,
    options.maxQueue === undefined ? undefined : `queue ${options.maxQueue}`,
    `${options.latency?.baseMs ?? 50} ms`,
    `failure rate ${options.failureRate ?? 0}`
  ]
  return parts.filter((part) => part !== undefined).join(", ")
}

const describeMetrics = (metrics: Simulator.Metrics): string => {
  const statuses = Object.entries(metrics.byStatus).map(([status, n]) => `${status}×${n}`).join(", ")
  return `${metrics.received} requests (${statuses === "" ? "none answered" : statuses}), peak ${metrics.peakInFlight} in flight`
}

/**
 * Serves until interrupted: the URL on stdout, then nothing until the end.
 *
 * @since 0.1.0
 * @category running
 */
export const serve = (options: Simulator.Options, port = 0): Effect.Effect<never, UsageError> =>
  Effect.scoped(Effect.gen(function*() {
    const simulator = Context.get(yield* Layer.build(layer(options, port)), Simulator.Simulator)
    yield* Console.log(`${simulator.url}/v1`)
    yield* Console.error(`simulator: ${describeOptions(options)}; Ctrl-C to stop`)
    // A stop request (Ctrl-C) ends it as an interruption would.
    const stop = yield* StopSignal.current
    return yield* Effect.zipRight(stop.graceful, Effect.interrupt).pipe(
      Effect.onInterrupt(() => Effect.flatMap(simulator.metrics, (metrics) => Console.error(`simulator served ${describeMetrics(metrics)}`)))
    )
  }))

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "simulate",
  {
    port: Options.integer("port").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Port on 127.0.0.1 (0: a free one)."),
      Options.withDefault(0)
    ),
    simulator: flags("")
  },
  ({ port, simulator }) => serve(optionsOf(simulator), port)
).pipe(Command.withDescription("Serve the simulated OpenAI-compatible provider until interrupted; prints its URL first."))
