/**
 * `effect-batch run <prompts.jsonl> --out results.jsonl`: sends every prompt
 * of a JSONL file to an OpenAI-compatible chat API (or to the simulator) as
 * one batch, writes each result as it settles, shows progress, and ends with
 * the batch report.
 *
 * The input is streamed into `Batch.stream` (`JsonlInput`); lines that cannot
 * be sent never reach the batch: they come out as `Failed` results with a
 * `TaskError.Permanent` naming `file:line`, make no call and take no permit,
 * rate-limit slot or budget. Limits come from the flags: `--rpm` / `--tpm`
 * (`RateLimiter.layer`; without them an unlimited limiter that learns the
 * provider's limits from its `x-ratelimit-*` headers), `--concurrency N` or
 * `adaptive` (`LimitAlgorithm.recommended()`, the default), `--max-cost`
 * (`Budget`), `--max-attempts` (`RetryPolicy`), `--timeout` (per attempt).
 * `--cache FILE` keeps answers in SQLite (`SqlResultCache.layer`), so a
 * second run over the same input pays for nothing, and identical requests in
 * flight at once share one call.
 *
 * Everything that can be checked before the first call is: flags, the input
 * file, the API key (read from the environment variable `--api-key-env`
 * names, kept `Redacted`), the results file (writable, not the input), a
 * resumed run against its checkpoint (`CheckpointedRun.check`: same model,
 * provider and input, line by line), the cache file. Any of those failing is
 * a `UsageError` (exit code 2), no call is made, and the results file is
 * opened (created or truncated) only after all of them passed.
 *
 * What it does not promise: results come out in completion order (each line
 * carries `index` and `line`); costs are known only for models with prices
 * (`Budget.defaultPrices`), so `--max-cost` needs one; an interrupted run
 * (Ctrl-C) keeps the lines already written and prints the report so far, but
 * the calls in flight are lost.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { resolve } from "node:path"
import * as Batch from "../Batch.js"
import * as BatchMetrics from "../BatchMetrics.js"
import * as BatchReport from "../BatchReport.js"
import * as Budget from "../Budget.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as LimitAlgorithm from "../LimitAlgorithm.js"
import * as OpenAiCompat from "../llm/OpenAiCompat.js"
import * as Progress from "../Progress.js"
import * as RateLimiter from "../RateLimiter.js"
import * as ResultCache from "../ResultCache.js"
import * as RetryPolicy from "../RetryPolicy.js"
import * as Simulator from "../llm/Simulator.js"
import * as SqlCheckpointStore from "../sql/SqlCheckpointStore.js"
import * as SqlResultCache from "../sql/SqlResultCache.js"
import * as TaskError from "../TaskError.js"
import { ItemsUnsuccessful, UsageError } from "./CliError.js"
import * as JsonlInput from "../llm/JsonlInput.js"
import * as LiveCounters from "./LiveCounters.js"
import * as ProgressDisplay from "./ProgressDisplay.js"
import * as ResultsWriter from "./ResultsWriter.js"
import * as SimulateCommand from "./SimulateCommand.js"
import * as CheckpointedRun from "./CheckpointedRun.js"
import * as BatchModeRun from "./BatchModeRun.js"
import type * as BatchProvider from "../llm/BatchProvider.js"
import * as StopSignal from "./StopSignal.js"
import * as OtlpExport from "./OtlpExport.js"

/**
 * What `run` is asked to do; the flags, parsed.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The JSONL input. */
  readonly input: string
  /** The JSONL results, created or truncated. */
  readonly out: string
  /** Required with `baseUrl`; default `sim-chat` with `simulate`. */
  readonly model?: string | undefined
  /** An OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`; or `simulate`. */
  readonly baseUrl?: string | undefined
  /** The environment variable holding the API key. Default `OPENAI_API_KEY`. */
  readonly apiKeyEnv?: string | undefined
  /** Start the simulator on a free loopback port and use it. */
  readonly simulate?: boolean | undefined
  /** With `simulate`: the simulator's options, over `SimulateCommand.demo`. */
  readonly simulator?: Simulator.Options | undefined
  readonly rpm?: number | undefined
  readonly tpm?: number | undefined
  /** A fixed limit (integer ≥ 1, or its text) or `"adaptive"` (default). */
  readonly concurrency?: number | string | undefined
  /** Budget cap in USD. */
  readonly maxCost?: number | undefined
  /** SQLite file of the result cache. */
  readonly cache?: string | undefined
  /** Attempts per item, the first included. Default: `RetryPolicy`'s (5). */
  readonly maxAttempts?: number | undefined
  /** Per attempt, in seconds. Default: none. */
  readonly timeoutSeconds?: number | undefined
  /** Default `auto`. */
  readonly progress?: ProgressDisplay.Mode | undefined
  /** Where progress and notes go. Default: stderr. */
  readonly progressOutput?: ProgressDisplay.Output | undefined
  /** After a first stop request, how long calls in flight may take to finish. Default 10. */
  readonly graceSeconds?: number | undefined
  /** Checkpoint the run under this id (and resume it if it exists). */
  readonly runId?: string | undefined
  /** SQLite file of the checkpoints. Default `effect-batch.db`. */
  readonly db?: string | undefined
  /** The command line, kept with a checkpointed run to say how to resume it. */
  readonly argv?: ReadonlyArray<string> | undefined
  /**
   * `realtime` (default): live calls; `batch`: the provider's Batch API
   * (`BatchModeRun`); `auto`: batches until `deadline`, live calls then for
   * the rest.
   */
  readonly mode?: "realtime" | "batch" | "auto" | undefined
  /** With `mode: "auto"`: `<number>s|m|h` after the run's first start. */
  readonly deadline?: string | undefined
  /**
   * An OpenTelemetry collector's OTLP/HTTP base URL: the run's spans (one
   * `effect-batch.run`, the batch's item and attempt spans, the HTTP calls;
   * in batch mode a span per shard) and `BatchMetrics` (`batch="cli"`,
   * `model`; live runs) are sent there (`OtlpExport`).
   */
  readonly otlp?: string | undefined
  /** With `mode: "batch"`: lines per shard. */
  readonly shardSize?: number | undefined
  /** With `mode: "batch"`: estimated tokens queued at the provider per model at most. */
  readonly queueTokens?: number | undefined
  /** With `mode: "batch"`: whose batch API. Default `openai`. */
  readonly batchApi?: "openai" | "anthropic" | undefined
  /** With `mode: "batch"`: seconds between reads of a running batch. */
  readonly pollSeconds?: number | undefined
}

/**
 * What a finished run did.
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome {
  readonly report: BatchReport.BatchReport
  /** Lines written to the results file. */
  readonly written: number
  readonly out: string
  /** Input lines rejected before the batch (not JSON, or not a request). */
  readonly rejected: number
  /** What the simulator saw, when the run used one. */
  readonly simulator: Simulator.Metrics | undefined
  /** A stop was requested: the calls in flight finished, the items not started were skipped. */
  readonly stopped: boolean
}

/** Rejected lines printed above the progress line; the rest are only in the results file. */
const maxNotes = 10

const defaultApiKeyEnv = "OPENAI_API_KEY"
const defaultDb = "effect-batch.db"

const usage = (message: string) => new UsageError({ message })

/** The checked settings of a run. */
interface Settings {
  readonly model: string
  readonly concurrency: number | "adaptive"
  readonly limits: RateLimiter.Limits
  readonly prices: Budget.Prices | undefined
}

const positive = (flag: string, value: number | undefined, integer = false): Effect.Effect<void, UsageError> =>
  value === undefined || (Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value)))
    ? Effect.void
    : Effect.fail(usage(`${flag} must be ${integer ? "an integer" : "a number"} > 0, got ${value}`))

const parseConcurrency = (value: number | string | undefined): Effect.Effect<number | "adaptive", UsageError> => {
  if (value === undefined || value === "adaptive") return Effect.succeed("adaptive")
  const n = typeof value === "number" ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN
  return Number.isInteger(n) && n >= 1
    ? Effect.succeed(n)
    : Effect.fail(usage(`--concurrency must be an integer ≥ 1 or "adaptive", got ${JSON.stringify(String(value))}`))
}

const settingsOf = (options: RunOptions): Effect.Effect<Settings, UsageError> =>
  Effect.gen(function*() {
    if (options.simulate === true && options.baseUrl !== undefined) {
      return yield* usage("--simulate and --base-url exclude each other: the simulator is the provider")
    }
    if (options.simulate !== true && options.baseUrl === undefined) {
      return yield* usage("--base-url is required (the provider's OpenAI-compatible base URL), or --simulate")
    }
    if (options.simulate !== true && options.simulator !== undefined && Object.keys(options.simulator).length > 0) {
      return yield* usage("the --sim-* flags tune the simulator, and need --simulate")
    }
    const model = options.model ?? (options.simulate === true ? "sim-chat" : undefined)
    if (model === undefined || model.trim() === "") return yield* usage("--model is required")
    yield* positive("--rpm", options.rpm)
    yield* positive("--tpm", options.tpm)
    yield* positive("--max-attempts", options.maxAttempts, true)
    yield* positive("--timeout", options.timeoutSeconds)
    if (options.maxCost !== undefined && !(Number.isFinite(options.maxCost) && options.maxCost >= 0)) {
      return yield* usage(`--max-cost must be a number ≥ 0 (USD), got ${options.maxCost}`)
    }
    const prices = Budget.defaultPrices[model]
    if (options.maxCost !== undefined && prices === undefined) {
      return yield* usage(`--max-cost needs the prices of the model, and none are known for ${JSON.stringify(model)}`)
    }
    const concurrency = yield* parseConcurrency(options.concurrency)
    const limits: RateLimiter.Limits = {
      ...(options.rpm === undefined ? {} : { requestsPerMinute: options.rpm }),
      ...(options.tpm === undefined ? {} : { tokensPerMinute: options.tpm })
    }
    return { model, concurrency, limits, prices }
  })

const checkInput = (path: string): Effect.Effect<void, UsageError, FileSystem.FileSystem> =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    fs.stat(path).pipe(
      Effect.mapError((error) =>
        usage(error._tag === "SystemError" && error.reason === "NotFound"
          ? `input file not found: ${path}`
          : `cannot read the input file ${path}: ${error.message}`)),
      Effect.filterOrFail((info) => info.type === "File", () => usage(`the input ${path} is not a file`)),
      Effect.asVoid
    ))

const readApiKey = (name: string): Effect.Effect<Redacted.Redacted, UsageError> =>
  Config.redacted(name).pipe(
    Effect.mapError(() =>
      usage(`the API key is read from the environment variable ${name}, which is not set (set it, or name another variable with --api-key-env)`)),
    Effect.filterOrFail(
      (key) => Redacted.value(key).trim() !== "",
      () => usage(`the environment variable ${name} (the API key) is empty`)
    )
  )

const causeMessage = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

const cacheLayer = (filename: string): Layer.Layer<ResultCache.ResultCache, UsageError> =>
  SqlResultCache.layer().pipe(
    Layer.provide(SqliteClient.layer({ filename })),
    Layer.catchAllCause((cause) => Layer.fail(usage(`cannot open the cache ${filename}: ${causeMessage(cause)}`)))
  )

/**
 * The checkpoint store of the CLI: SQLite. The client leaves WAL to the store,
 * which turns it on itself, so that a file that is not a database is reported
 * by the store rather than as a crash in the driver.
 *
 * @since 0.1.0
 * @category layers
 */
export const checkpointLayer = (filename: string): Layer.Layer<CheckpointStore.CheckpointStore, UsageError> =>
  SqlCheckpointStore.layer().pipe(
    Layer.provide(SqliteClient.layer({ filename, disableWAL: true })),
    Layer.catchAllCause((cause) => Layer.fail(usage(`cannot use the checkpoint database ${filename}: ${causeMessage(cause)}`)))
  )

/**
 * Runs the batch; fails with a `UsageError` before any call when the flags,
 * the input, the key, the output or the cache are not usable.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (
  options: RunOptions
): Effect.Effect<Outcome, UsageError | PlatformError.PlatformError, FileSystem.FileSystem | HttpClient.HttpClient> =>
  Effect.scoped(Effect.gen(function*() {
    const settings = yield* settingsOf(options)
    const telemetry = options.otlp === undefined ? undefined : yield* OtlpExport.layer(options.otlp, "effect-batch")
    yield* checkInput(options.input)
    const apiKey = options.simulate === true ? undefined : yield* readApiKey(options.apiKeyEnv ?? defaultApiKeyEnv)
    yield* ResultsWriter.check(options.out, { input: options.input })
    const provider = options.simulate === true ? "simulator" : options.baseUrl!
    // A resume is checked against its checkpoint before any other file is opened: a refused one changes nothing.
    const checkpointed = options.runId === undefined ? undefined : yield* Effect.gen(function*() {
      const runId = options.runId!
      const db = options.db ?? defaultDb
      const store = Context.get(yield* Layer.build(checkpointLayer(db)), CheckpointStore.CheckpointStore)
      const scan = yield* CheckpointedRun.check({ store, runId, db, input: options.input, model: settings.model, provider }).pipe(
        Effect.catchTag("SystemError", "BadArgument", (error) => Effect.fail(usage(`cannot read the input file ${options.input}: ${error.message}`)))
      )
      return { store, runId, scan }
    })
    const cache = options.cache === undefined
      ? undefined
      : Context.get(yield* Layer.build(cacheLayer(options.cache)), ResultCache.ResultCache)
    const simulator = options.simulate === true
      ? Context.get(
          yield* Layer.build(SimulateCommand.layer({ ...SimulateCommand.demo, ...options.simulator })),
          Simulator.Simulator
        )
      : undefined
    const baseUrl = simulator === undefined ? options.baseUrl! : `${simulator.url}/v1`
    const llm = yield* Effect.try({
      try: () => OpenAiCompat.chat({ baseUrl, apiKey, model: settings.model, prices: settings.prices }),
      catch: (error) => usage(`--base-url: ${error instanceof Error ? error.message : String(error)}`)
    })
    // Last of the checks: a run that cannot start leaves an existing results file as it was.
    const writer = yield* ResultsWriter.open(options.out, { input: options.input })

    const { concurrency } = settings
    const limiter = concurrency === "adaptive"
      ? yield* ConcurrencyLimiter.make(LimitAlgorithm.recommended())
      : yield* ConcurrencyLimiter.makeFixed(concurrency)
    const budget = yield* Budget.make({ maxCost: options.maxCost })
    const clock = yield* Effect.clock
    const live = LiveCounters.make({ now: () => clock.unsafeCurrentTimeMillis(), initialLimit: yield* limiter.current })
    const rateLimiter = yield* RateLimiter.make(settings.limits)
    const display = yield* ProgressDisplay.start({
      counters: live,
      mode: options.progress ?? "auto",
      output: options.progressOutput
    })
    if (checkpointed === undefined) {
      yield* JsonlInput.count(options.input).pipe(
        Effect.tap((n) => Effect.sync(() => live.setTotal(n))),
        Effect.ignore,
        Effect.forkScoped
      )
    } else {
      live.setTotal(checkpointed.scan.lines)
    }

    // Batch index → input line, for the items between admission and their result.
    const origins = new Map<number, JsonlInput.Entry>()
    let nextBatchIndex = 0
    let rejected = 0
    let batchReport: BatchReport.BatchReport | undefined
    const reject = (lines: ReadonlyArray<JsonlInput.Rejected>) =>
      Effect.suspend(() => {
        const records = lines.map((line) => {
          const result = ResultsWriter.rejectedResult(line)
          live.result(result)
          return ResultsWriter.recordOf(line, result)
        })
        const notes = lines.filter((_, i) => rejected + i < maxNotes).map((line) => display.note(line.message))
        if (rejected < maxNotes && rejected + lines.length >= maxNotes) {
          notes.push(display.note(`(further rejected lines are only in ${options.out})`))
        }
        rejected += lines.length
        return Effect.zipRight(writer.write(records), Effect.all(notes, { discard: true }))
      })
    const entries = JsonlInput.read(options.input).pipe(
      Stream.mapChunksEffect((chunk) => {
        const valid: Array<JsonlInput.Entry> = []
        const invalid: Array<JsonlInput.Rejected> = []
        for (const item of chunk) {
          if (item._tag === "Entry") {
            origins.set(nextBatchIndex++, item)
            valid.push(item)
          } else {
            invalid.push(item)
          }
        }
        const out = Chunk.unsafeFromArray(valid)
        return invalid.length === 0 ? Effect.succeed(out) : Effect.as(reject(invalid), out)
      })
    )

    const keys = new WeakMap<JsonlInput.Entry, string>()
    const keyOf = (entry: JsonlInput.Entry) => {
      let key = keys.get(entry)
      if (key === undefined) {
        key = llm.cacheKey(entry.input)
        keys.set(entry, key)
      }
      return key
    }
    // First stop request: admit nothing more and let the calls in flight finish, for up to the grace
    // period; second request (or the grace period over): interrupt them, aborting their requests.
    const stop = yield* StopSignal.current
    const grace = Duration.seconds(options.graceSeconds ?? 10)
    let stopped = false
    const stopWhen = Effect.zipRight(
      stop.graceful,
      Effect.suspend(() => {
        stopped = true
        return display.note(`stopping: no new calls; the ones in flight may finish within ${Duration.format(grace)} ` +
          "(stop again to interrupt them now)")
      })
    )
    const hardStop = Effect.zipRight(stop.graceful, Effect.race(Effect.sleep(grace), stop.now))

    const estimate = llm.options.estimate!
    const settle = llm.options.settle!
    const batchOptions: Batch.Options<JsonlInput.Entry, OpenAiCompat.ChatCompletion, TaskError.TaskError, string> = {
      estimate: (entry) => estimate(entry.input, entry.index),
      settle: (completion, entry) => {
        const cost = settle(completion, entry.input, entry.index)
        live.settled(cost)
        return cost
      },
      // Once the batch ends: its report, or on interruption what it had settled by then.
      onReport: (report) =>
        Effect.sync(() => {
          batchReport = report
        }),
      ...(options.timeoutSeconds === undefined ? {} : { timeout: Duration.seconds(options.timeoutSeconds) }),
      ...(cache === undefined ? {} : { cache: { key: keyOf }, key: keyOf }),
      ...(checkpointed === undefined ? {} : {
        checkpoint: {
          runId: checkpointed.runId,
          // A run resumed with another model or provider is refused (checked above, before any file was touched).
          fingerprint: CheckpointedRun.fingerprint(settings.model, provider),
          meta: {
            argv: options.argv ?? [],
            input: resolve(options.input),
            model: settings.model,
            provider,
            lines: checkpointed.scan.lines,
            rejected: checkpointed.scan.rejected
          } satisfies CheckpointedRun.Meta
        }
      }),
      stopWhen,
      ...(telemetry === undefined ? {} : { spans: true, metrics: true, name: "cli" })
    }
    const task = (entry: JsonlInput.Entry) => llm.task(entry.input, entry.index)

    const results = Batch.stream(entries, task, batchOptions).pipe(
      Stream.runForEachChunk((chunk) =>
        Effect.suspend(() => {
          const records: Array<ResultsWriter.OutputRecord> = []
          for (const result of chunk) {
            const origin = origins.get(result.index)!
            origins.delete(result.index)
            live.result(result)
            records.push(ResultsWriter.recordOf(origin, result))
          }
          return writer.write(records)
        })
      )
    )
    let context = Context.empty().pipe(
      Context.add(RateLimiter.RateLimiter, rateLimiter),
      Context.add(ConcurrencyLimiter.ConcurrencyLimiter, limiter),
      Context.add(Budget.Budget, budget),
      Context.add(Progress.Progress, Progress.make((event) => Effect.sync(() => live.event(event))))
    )
    if (cache !== undefined) context = Context.add(context, ResultCache.ResultCache, cache)
    if (checkpointed !== undefined) context = Context.add(context, CheckpointStore.CheckpointStore, checkpointed.store)
    if (options.maxAttempts !== undefined) {
      context = Context.add(context, RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: options.maxAttempts }))
    }
    // The checkpoint's refusals (an input changed since the check above, an unusable store) end the run with their message.
    const checked = Effect.provide(results, context).pipe(
      Effect.catchTags({
        CheckpointMismatch: (error) => Effect.fail(usage(`run ${options.runId}: ${error.message}`)),
        CheckpointError: (error) => Effect.fail(usage(`run ${options.runId}: ${error.message}`))
      })
    )
    const running = oneTrace(telemetry, { input: options.input, model: settings.model, provider })(checked)
    yield* Effect.raceWith(running, hardStop, {
      onSelfDone: (exit, stopper) => Effect.zipRight(Fiber.interrupt(stopper), exit),
      onOtherDone: (_, runner) => Effect.zipRight(Fiber.interrupt(runner), Effect.interrupt)
    }).pipe(
      Effect.onInterrupt(() =>
        Effect.zipRight(
          display.stop,
          Console.error([
            batchReport === undefined
              ? "interrupted before the batch started"
              : `interrupted; the report so far:\n${BatchReport.format(withRejected(batchReport, rejected))}`,
            // Its outcomes so far are in the checkpoint: say how to go on.
            ...(checkpointed === undefined ? [] : [`resume with: ${CheckpointedRun.resumeCommand(options.argv ?? [])}`])
          ].join("\n"))
        ))
    )
    yield* display.stop
    return {
      // Set by `onReport` before the results stream ends.
      report: withRejected(batchReport!, rejected),
      written: yield* writer.written,
      out: options.out,
      rejected,
      simulator: simulator === undefined ? undefined : yield* simulator.metrics,
      stopped
    }
  }))

/**
 * With `--otlp` (`telemetry` given), the run as one trace: an `effect-batch.run` span (with `attributes`, prefixed)
 * over the batch's or the shards' spans, and its metrics labelled with the model. The exporters send what is left
 * when it ends: the layer's scope closes with the run. Without it, the run makes no spans (`OtlpExport.untraced`).
 */
const oneTrace = (
  telemetry: Layer.Layer<never, never, HttpClient.HttpClient> | undefined,
  attributes: { readonly model: string } & Record<string, string>
) =>
  <A, E, R>(run: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | HttpClient.HttpClient> =>
    telemetry === undefined ? Effect.provide(run, OtlpExport.untraced) : run.pipe(
      Effect.withSpan("effect-batch.run", {
        attributes: Object.fromEntries(Object.entries(attributes).map(([key, value]) => [`effect-batch.${key}`, value]))
      }),
      BatchMetrics.withLabels({ model: attributes.model }),
      Effect.provide(telemetry)
    )

/**
 * What a checkpointed batch-mode run keeps of its command: `batches attach`
 * runs it again from this.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchRunMeta {
  readonly input: string
  readonly out: string
  readonly model: string
  readonly simulate: boolean
  readonly baseUrl?: string | undefined
  readonly apiKeyEnv?: string | undefined
  readonly batchApi?: "openai" | "anthropic" | undefined
  readonly mode?: "batch" | "auto" | undefined
  readonly deadline?: string | undefined
  readonly shardSize?: number | undefined
  readonly pollSeconds?: number | undefined
  readonly queueTokens?: number | undefined
  readonly maxCost?: number | undefined
}

const attachable = (options: RunOptions) => {
  const kept: Record<string, unknown> = {
    baseUrl: options.baseUrl,
    apiKeyEnv: options.apiKeyEnv,
    batchApi: options.batchApi,
    mode: options.mode === "auto" ? "auto" : "batch",
    deadline: options.deadline,
    shardSize: options.shardSize,
    pollSeconds: options.pollSeconds,
    queueTokens: options.queueTokens,
    maxCost: options.maxCost
  }
  return Object.fromEntries(Object.entries(kept).filter(([, value]) => value !== undefined))
}

const deadlineOf = (options: RunOptions): Effect.Effect<Duration.Duration | undefined, UsageError> => {
  if (options.mode !== "auto") {
    return options.deadline === undefined ? Effect.succeed(undefined) : Effect.fail(usage("--deadline goes with --mode auto"))
  }
  if (options.deadline === undefined) return Effect.fail(usage("--mode auto needs --deadline (e.g. 6h): when to call live what batches have not answered"))
  if (options.batchApi === "anthropic") return Effect.fail(usage("--mode auto calls live through an OpenAI-compatible API: not with --batch-api anthropic"))
  const match = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$/.exec(options.deadline)
  if (match === null || !(Number(match[1]) > 0)) {
    return Effect.fail(usage(`--deadline must be a number > 0 followed by s, m or h (e.g. 90m), got ${JSON.stringify(options.deadline)}`))
  }
  const unit = match[2] === "s" ? "seconds" : match[2] === "m" ? "minutes" : "hours"
  return Effect.succeed(Duration.decode(`${Number(match[1])} ${unit}`))
}

/**
 * Runs the prompts through the provider's Batch API (`BatchModeRun`), after
 * the same checks as `run`: flags, input, key, results file, checkpoint
 * database. Flags that only shape live calls are refused.
 *
 * @since 0.1.0
 * @category running
 */
export const runInBatchMode = (
  options: RunOptions
): Effect.Effect<
  BatchModeRun.Outcome,
  UsageError | PlatformError.PlatformError | BatchProvider.BatchApiError,
  FileSystem.FileSystem | HttpClient.HttpClient
> =>
  Effect.scoped(Effect.gen(function*() {
    const liveOnly = [
      ["--rpm", options.rpm],
      ["--tpm", options.tpm],
      ["--cache", options.cache],
      ["--max-attempts", options.maxAttempts],
      ["--timeout", options.timeoutSeconds],
      ["--concurrency", options.concurrency === "adaptive" ? undefined : options.concurrency]
    ] as const
    const refused = liveOnly.filter(([, value]) => value !== undefined).map(([flag]) => flag)
    if (refused.length > 0) {
      return yield* usage(`${refused.join(", ")} shape${refused.length === 1 ? "s" : ""} live calls, and --mode batch makes none`)
    }
    yield* positive("--shard-size", options.shardSize, true)
    const deadline = yield* deadlineOf(options)
    yield* positive("--poll", options.pollSeconds)
    yield* positive("--queue-tokens", options.queueTokens, true)
    const settings = yield* settingsOf(options)
    const telemetry = options.otlp === undefined ? undefined : yield* OtlpExport.layer(options.otlp, "effect-batch")
    yield* checkInput(options.input)
    const apiKey = options.simulate === true ? undefined : yield* readApiKey(options.apiKeyEnv ?? defaultApiKeyEnv)
    yield* ResultsWriter.check(options.out, { input: options.input })
    const store = options.runId === undefined
      ? undefined
      : Context.get(yield* Layer.build(checkpointLayer(options.db ?? defaultDb)), CheckpointStore.CheckpointStore)
    const running = BatchModeRun.run({
      input: options.input,
      out: options.out,
      model: settings.model,
      baseUrl: options.baseUrl,
      apiKey,
      simulate: options.simulate,
      simulator: options.simulator,
      runId: options.runId,
      store,
      shardSize: options.shardSize,
      pollSeconds: options.pollSeconds,
      api: options.batchApi,
      maxCost: options.maxCost,
      deadline,
      queueTokens: options.queueTokens,
      meta: {
        input: resolve(options.input),
        out: resolve(options.out),
        model: settings.model,
        simulate: options.simulate === true,
        ...attachable(options)
      } satisfies BatchRunMeta
    })
    return yield* oneTrace(telemetry, { input: options.input, model: settings.model, mode: options.mode ?? "batch" })(running)
  }))

/**
 * The batch's report with the input lines that never reached it (they could
 * not be parsed): each counts as an item that failed `Permanent` without a
 * call, as its line in the results file says.
 */
const withRejected = (report: BatchReport.BatchReport, rejected: number): BatchReport.BatchReport => {
  if (rejected === 0) return report
  const total = report.total + rejected
  return {
    ...report,
    total,
    failed: report.failed + rejected,
    failures: { ...report.failures, Permanent: report.failures.Permanent + rejected },
    throughput: report.wallMs > 0 ? (total * 1000) / report.wallMs : 0
  }
}

/**
 * What the command prints after a run: the report, where the results are,
 * and what the simulator saw.
 *
 * @since 0.1.0
 * @category formatting
 */
export const summary = (outcome: Outcome): string => {
  const lines = [BatchReport.format(outcome.report), `results     ${outcome.written} lines in ${outcome.out}`]
  if (outcome.rejected > 0) lines.push(`rejected    ${outcome.rejected} input lines (not JSON, or not a chat request)`)
  if (outcome.simulator !== undefined) {
    const statuses = Object.entries(outcome.simulator.byStatus).map(([status, n]) => `${status}×${n}`).join(", ")
    lines.push(`simulator   received ${outcome.simulator.received} requests (${statuses === "" ? "none" : statuses})`)
  }
  return lines.join("\n")
}

const some = <A>(option: Option.Option<A>): A | undefined => Option.getOrUndefined(option)

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "run",
  {
    input: Args.file({ name: "prompts.jsonl" }).pipe(
      Args.withDescription("JSONL input: per line a prompt (a JSON string) or a chat request object, with an optional id.")
    ),
    out: Options.file("out").pipe(
      Options.withAlias("o"),
      Options.withPseudoName("FILE"),
      Options.withDescription("JSONL results, written as items settle.")
    ),
    baseUrl: Options.text("base-url").pipe(
      Options.withPseudoName("URL"),
      Options.withDescription("Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1."),
      Options.optional
    ),
    apiKeyEnv: Options.text("api-key-env").pipe(
      Options.withPseudoName("VAR"),
      Options.withDescription("Environment variable holding the API key."),
      Options.withDefault(defaultApiKeyEnv)
    ),
    simulate: Options.boolean("simulate").pipe(
      Options.withDescription("Start the simulated provider (rate-limited, flaky, capacity-limited) and use it.")
    ),
    model: Options.text("model").pipe(
      Options.withPseudoName("NAME"),
      Options.withDescription("Model name (default with --simulate: sim-chat)."),
      Options.optional
    ),
    rpm: Options.float("rpm").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Requests per minute (default: learned from the provider's headers)."),
      Options.optional
    ),
    tpm: Options.float("tpm").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Tokens per minute (default: learned from the provider's headers)."),
      Options.optional
    ),
    concurrency: Options.text("concurrency").pipe(
      Options.withPseudoName("N|adaptive"),
      Options.withDescription("Calls in flight at once: a number, or adaptive (follows latency and drops)."),
      Options.withDefault("adaptive")
    ),
    maxCost: Options.float("max-cost").pipe(
      Options.withPseudoName("USD"),
      Options.withDescription("Stop starting calls once this many USD are spent or reserved."),
      Options.optional
    ),
    cache: Options.file("cache").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("SQLite file caching answers across runs."),
      Options.optional
    ),
    maxAttempts: Options.integer("max-attempts").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Attempts per item, the first included, not counting those rate limited (429; retried for up to 10 minutes) (default 5)."),
      Options.optional
    ),
    timeout: Options.float("timeout").pipe(
      Options.withPseudoName("SECONDS"),
      Options.withDescription("Time limit per attempt (default: none)."),
      Options.optional
    ),
    progress: Options.choice("progress", ["auto", "tty", "plain", "none"]).pipe(
      Options.withDescription("Progress display on stderr (auto: a redrawn line on a terminal, a log line otherwise)."),
      Options.withDefault("auto")
    ),
    runId: Options.text("run-id").pipe(
      Options.withPseudoName("ID"),
      Options.withDescription("Checkpoint every outcome under this id; run again with the same id to resume."),
      Options.optional
    ),
    db: Options.file("db").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("SQLite file of the checkpoints (default effect-batch.db)."),
      Options.optional
    ),
    grace: Options.float("grace").pipe(
      Options.withPseudoName("SECONDS"),
      Options.withDescription("On Ctrl-C, how long calls in flight may take to finish before they are interrupted."),
      Options.withDefault(10)
    ),
    mode: Options.choice("mode", ["realtime", "batch", "auto"]).pipe(
      Options.withDescription(
        "realtime: live calls; batch: the provider's Batch API (about half the price, results within 24 h; with --run-id, " +
          "run the same command again to re-attach); auto: batches until --deadline, then live calls for the rest."
      ),
      Options.withDefault("realtime")
    ),
    deadline: Options.text("deadline").pipe(
      Options.withPseudoName("DURATION"),
      Options.withDescription("With --mode auto: when, after the run's first start, to stop waiting on batches (e.g. 6h, 90m)."),
      Options.optional
    ),
    shardSize: Options.integer("shard-size").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("With --mode batch: lines per provider batch (default 47 500)."),
      Options.optional
    ),
    batchApi: Options.choice("batch-api", ["openai", "anthropic"]).pipe(
      Options.withDescription("With --mode batch: OpenAI's Batch API or Anthropic's Message Batches (the simulator has both)."),
      Options.withDefault("openai")
    ),
    queueTokens: Options.integer("queue-tokens").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("With --mode batch: estimated tokens queued at the provider per model at most (its enqueued-token limit)."),
      Options.optional
    ),
    otlp: Options.text("otlp").pipe(
      Options.withPseudoName("URL"),
      Options.withDescription(
        "Send the run's traces (a span per run, item and attempt) and metrics to an OpenTelemetry collector over OTLP/HTTP, " +
          "e.g. http://127.0.0.1:4318 (needs the package @effect/opentelemetry)."
      ),
      Options.optional
    ),
    poll: Options.float("poll").pipe(
      Options.withPseudoName("SECONDS"),
      Options.withDescription("With --mode batch: seconds between reads of a running batch (default 15, growing ×1.5 to 5 min)."),
      Options.optional
    ),
    simulator: SimulateCommand.flags("sim-")
  },
  (flags) =>
    Effect.gen(function*() {
      // Kept with a checkpointed run, and printed as the command that resumes it.
      const argv = process.argv.slice(2)
      if (flags.mode === "realtime" && flags.deadline._tag === "Some") {
        return yield* usage("--deadline goes with --mode auto")
      }
      const options: RunOptions = {
        input: flags.input,
        out: flags.out,
        model: some(flags.model),
        baseUrl: some(flags.baseUrl),
        apiKeyEnv: flags.apiKeyEnv,
        simulate: flags.simulate,
        simulator: SimulateCommand.optionsOf(flags.simulator),
        rpm: some(flags.rpm),
        tpm: some(flags.tpm),
        concurrency: flags.concurrency,
        maxCost: some(flags.maxCost),
        cache: some(flags.cache),
        maxAttempts: some(flags.maxAttempts),
        timeoutSeconds: some(flags.timeout),
        progress: flags.progress,
        graceSeconds: flags.grace,
        runId: some(flags.runId),
        db: some(flags.db),
        argv,
        mode: flags.mode,
        shardSize: some(flags.shardSize),
        pollSeconds: some(flags.poll),
        queueTokens: some(flags.queueTokens),
        batchApi: flags.batchApi,
        deadline: some(flags.deadline),
        otlp: some(flags.otlp)
      }
      if (flags.mode === "batch" || flags.mode === "auto") {
        const outcome = yield* runInBatchMode(options)
        yield* Console.log(BatchModeRun.summary(outcome))
        const failed = outcome.report.failed + outcome.rejected
        const skipped = outcome.report.skipped
        if (failed + skipped > 0) return yield* new ItemsUnsuccessful({ failed, skipped })
        return
      }
      const outcome = yield* run(options)
      yield* Console.log(summary(outcome))
      const stoppedEarly = outcome.stopped || outcome.report.skippedBy.quota + outcome.report.skippedBy.budget > 0
      if (stoppedEarly && flags.runId._tag === "Some") {
        yield* Console.error(`resume with: ${CheckpointedRun.resumeCommand(argv)}`)
      }
      if (outcome.stopped) {
        yield* Console.error(`stopped before the end: ${outcome.report.skippedBy.interrupted} items were not started`)
        return yield* Effect.interrupt
      }
      const { failed, skipped } = outcome.report
      if (failed + skipped > 0) return yield* new ItemsUnsuccessful({ failed, skipped })
    })
).pipe(Command.withDescription("Send every prompt of a JSONL file to an OpenAI-compatible chat API as one batch."))
