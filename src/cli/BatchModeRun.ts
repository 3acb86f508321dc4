/**
 * `effect-batch run … --mode batch`: the prompts of a JSONL file go through
 * the provider's Batch API (`BatchApi` over `OpenAiBatch`, or
 * `AnthropicBatch` with `--batch-api anthropic`) instead of live
 * calls, at about half the price; each result is written as its shard is
 * ingested, in the same results format as a live run (`source: "batch"`).
 *
 * With `--run-id` the run is crash-safe: shard states and outcomes are in
 * the checkpoint database, and the same command run again re-attaches to
 * the batches already created (none is created twice) and writes every
 * line; `effect-batch batches status|cancel <run-id>` read and cancel a
 * run's batches. With `--simulate` the simulator's batches run fast (a
 * shard takes seconds) and are polled every half second.
 *
 * `--max-cost` is reserved per shard, at batch prices, before its batch is
 * created: a shard that would pass it is not created, and its lines come
 * out `skipped` (`budget`); the same command with a larger cap takes them up.
 *
 * What it does not promise: the input is read into memory first; the live
 * run's limits (`--rpm`, `--tpm`, `--concurrency`, `--cache`,
 * `--max-attempts`, `--timeout`) do not apply to batches and are refused
 * with it; there is no `auto` mode yet (live calls for what
 * batches did not finish by a deadline); a results file is rewritten from
 * the start on each attempt, the checkpoint filling in what earlier ones got.
 *
 * @since 0.1.0
 */
import type * as PlatformError from "@effect/platform/Error"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Budget from "../Budget.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as Batch from "../Batch.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as LimitAlgorithm from "../LimitAlgorithm.js"
import * as AnthropicBatch from "../llm/AnthropicBatch.js"
import * as OpenAiCompat from "../llm/OpenAiCompat.js"
import * as RateLimiter from "../RateLimiter.js"
import * as BatchApi from "../llm/BatchApi.js"
import * as BatchProvider from "../llm/BatchProvider.js"
import * as JsonlInput from "../llm/JsonlInput.js"
import * as OpenAiBatch from "../llm/OpenAiBatch.js"
import * as Simulator from "../llm/Simulator.js"
import { UsageError } from "./CliError.js"
import * as ResultsWriter from "./ResultsWriter.js"
import * as SimulateCommand from "./SimulateCommand.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly input: string
  readonly out: string
  readonly model: string
  readonly baseUrl?: string | undefined
  readonly apiKey?: Redacted.Redacted | undefined
  readonly simulate?: boolean | undefined
  readonly simulator?: Simulator.Options | undefined
  readonly runId?: string | undefined
  /** The checkpoint store, when `runId` is set. */
  readonly store?: CheckpointStore.Store | undefined
  /** Kept with a checkpointed run: what `batches attach` runs again. */
  readonly meta?: unknown
  /** Estimated tokens queued at the provider per model at most. */
  readonly queueTokens?: number | undefined
  /** Lines per shard. Default: 95 % of the provider's 50 000. */
  readonly shardSize?: number | undefined
  /**
   * `auto`: past this long after the run's first start, batches still out
   * are cancelled and the lines they had not answered are called live.
   */
  readonly deadline?: Duration.Duration | undefined
  /** Budget cap in USD, at batch prices: a shard whose estimate would pass it is not created. */
  readonly maxCost?: number | undefined
  /** Whose batch API: OpenAI's (default) or Anthropic's Message Batches. */
  readonly api?: "openai" | "anthropic" | undefined
  /** Seconds between reads of a running batch. Default: 15, growing ×1.5 to 5 min (half a second with `simulate`). */
  readonly pollSeconds?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Outcome {
  readonly report: BatchApi.Report
  readonly written: number
  readonly rejected: number
  readonly out: string
  readonly simulator: Simulator.Metrics | undefined
}

/** The simulator's batches in a CLI demo: a shard of thousands of lines ends in seconds. */
const fastBatches: Simulator.BatchOptions = { validateMs: 300, linesPerSecond: 5_000, finalizeMs: 300, fileProcessingMs: 100 }

/**
 * Runs the input's prompts through the Batch API; writes every line of the
 * results file.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (
  options: Options
): Effect.Effect<
  Outcome,
  UsageError | PlatformError.PlatformError | BatchProvider.BatchApiError,
  FileSystem.FileSystem | HttpClient.HttpClient
> =>
  Effect.scoped(Effect.gen(function*() {
    const simulator = options.simulate === true
      ? Context.get(
          yield* Layer.build(SimulateCommand.layer({
            ...SimulateCommand.demo,
            ...options.simulator,
            batches: { ...fastBatches, ...options.simulator?.batches }
          })),
          Simulator.Simulator
        )
      : undefined
    const baseUrl = simulator === undefined ? options.baseUrl! : `${simulator.url}/v1`
    if (!/^https?:\/\/\S+$/.test(baseUrl)) return yield* new UsageError({ message: `--base-url must be an http(s) URL, got ${JSON.stringify(baseUrl)}` })
    const prices = Budget.defaultPrices[options.model]
    const anthropic = options.api === "anthropic"
    const spec = anthropic
      ? AnthropicBatch.chat({ model: options.model, prices })
      : BatchApi.chat({ baseUrl, apiKey: options.apiKey, model: options.model, prices })
    const provider = anthropic
      ? yield* AnthropicBatch.make({ baseUrl, apiKey: options.apiKey })
      : yield* OpenAiBatch.make({ baseUrl, apiKey: options.apiKey })

    const entries: Array<JsonlInput.Entry> = []
    const rejectedLines: Array<JsonlInput.Rejected> = []
    yield* Stream.runForEach(JsonlInput.read(options.input), (item) =>
      Effect.sync(() => {
        if (item._tag === "Entry") entries.push(item)
        else rejectedLines.push(item)
      }))
    const writer = yield* ResultsWriter.open(options.out, { input: options.input })
    yield* writer.write(rejectedLines.map((line) => ResultsWriter.recordOf(line, ResultsWriter.rejectedResult(line))))

    const { report } = yield* BatchApi.run(entries, {
      ...spec,
      toRequest: (entry, index) => spec.toRequest(entry.input, index),
      decode: (body, entry, index) => spec.decode(body, entry.input, index),
      tokens: (entry, index) => spec.tokens!(entry.input, index),
      estimate: (entry, index) => spec.estimate!(entry.input, index),
      ...(options.shardSize === undefined ? {} : { shard: { maxRequests: options.shardSize } }),
      ...(simulator === undefined ? {} : { poll: Schedule.spaced("500 millis"), limitWait: "2 seconds" }),
      ...(options.pollSeconds === undefined ? {} : { poll: Schedule.spaced(Duration.seconds(options.pollSeconds)) }),
      ...(options.runId === undefined ? {} : { checkpoint: { runId: options.runId, meta: options.meta } }),
      ...(options.queueTokens === undefined ? {} : { queueTokens: options.queueTokens }),
      onResult: (result) => writer.write([ResultsWriter.recordOf(entries[result.index]!, result)]),
      ...(options.deadline === undefined ? {} : {
        fallback: {
          after: options.deadline,
          // Live as `run` calls: the limits learned from the provider's headers, an adaptive concurrency limit.
          live: (indices: ReadonlyArray<number>) =>
            Effect.gen(function*() {
              const llm = OpenAiCompat.chat({ baseUrl, apiKey: options.apiKey, model: options.model, prices })
              const { results } = yield* Batch.run(indices, (i: number) => llm.task(entries[i]!.input, i), {
                estimate: (i: number) => llm.options.estimate!(entries[i]!.input, i),
                settle: (value: OpenAiCompat.ChatCompletion, i: number) => llm.options.settle!(value, entries[i]!.input, i)
              }).pipe(
                Effect.provideServiceEffect(RateLimiter.RateLimiter, RateLimiter.make({})),
                Effect.provideServiceEffect(ConcurrencyLimiter.ConcurrencyLimiter, ConcurrencyLimiter.make(LimitAlgorithm.recommended()))
              )
              return results.map((result) => ({ ...result, index: indices[result.index]! }))
            }),
          cost: (completion: OpenAiCompat.ChatCompletion) => completion.cost
        }
      })
    }).pipe(
      Effect.provideService(BatchProvider.BatchProvider, provider),
      Effect.provideService(Budget.Budget, Budget.unsafeMake({ maxCost: options.maxCost })),
      options.store === undefined ? (effect) => effect : Effect.provideService(CheckpointStore.CheckpointStore, options.store),
      Effect.catchTags({
        CheckpointMismatch: (error) => Effect.fail(new UsageError({ message: `run ${options.runId}: ${error.message}` })),
        CheckpointError: (error) => Effect.fail(new UsageError({ message: `run ${options.runId}: ${error.message}` }))
      })
    )
    return {
      report,
      written: yield* writer.written,
      rejected: rejectedLines.length,
      out: options.out,
      simulator: simulator === undefined ? undefined : yield* simulator.metrics
    }
  }))

const usd = (n: number) => `$${n.toFixed(n < 1 ? 4 : 2)}`

/**
 * What the command prints after a batch-mode run.
 *
 * @since 0.1.0
 * @category formatting
 */
export const summary = (outcome: Outcome): string => {
  const r = outcome.report
  const saved = r.liveCost - r.cost
  const lines = [
    `items       ${r.items + outcome.rejected}: ${r.succeeded} succeeded, ${r.failed + outcome.rejected} failed, ${r.skipped} skipped`,
    `batches     ${r.batchesCreated} created, ${r.batchesAttached} re-attached, ${r.shards} shards, ${r.rounds} round${r.rounds === 1 ? "" : "s"}`,
    ...(r.live > 0 ? [`live        ${r.live} items called live past the deadline`] : []),
    `cost        ${usd(r.cost)} (live: ${usd(r.liveCost)}, saved ${usd(saved)})`,
    `results     ${outcome.written} lines in ${outcome.out}`
  ]
  if (outcome.rejected > 0) lines.push(`rejected    ${outcome.rejected} input lines (not JSON, or not a chat request)`)
  if (outcome.simulator !== undefined) {
    const b = outcome.simulator.batches
    lines.push(`simulator   ${b.created} batches created, ${b.linesBilled} lines billed`)
  }
  return lines.join("\n")
}
