/**
 * A checkpointed run of the CLI (`run --run-id ID`) as the other commands see
 * it: what `run` keeps beside its outcomes (`Meta`: the input's path, the
 * model, the provider, how many input lines there were and how many could not
 * be sent), the check a resume passes before it touches any file, and the
 * run's results rebuilt from its input and its checkpoint (`export`).
 *
 * The checkpoint holds the batch's items, which are the input's sendable
 * lines only: batch index `i` is the `i`-th line that parsed. Each outcome is
 * stored under `CheckpointStore.itemKeyOf(i, entry)`, a hash of the parsed
 * line with its input index and line number. So one pass over the input,
 * hashing each line that has a recorded outcome, tells whether this is the
 * input the run was started with, and names the first line that is not.
 *
 * What it does not promise: runs recorded before `Meta` was kept (they hold
 * only `argv`) are checked against their outcomes alone, and `export` needs
 * to be told where their input is; the rejected lines of such a run are not
 * counted by `runs`.
 *
 * @since 0.1.0
 */
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import { identity } from "effect/Function"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as CheckpointStore from "../CheckpointStore.js"
import * as JsonlInput from "../llm/JsonlInput.js"
import type * as TaskResult from "../TaskResult.js"
import { UsageError } from "./CliError.js"
import * as ResultsWriter from "./ResultsWriter.js"

/**
 * What `run` keeps with a checkpointed run (the store's `meta`).
 *
 * @since 0.1.0
 * @category models
 */
export const Meta = Schema.Struct({
  /** The command line, to say how to resume. */
  argv: Schema.Array(Schema.String),
  /** The input file, as an absolute path. */
  input: Schema.optional(Schema.String),
  model: Schema.optional(Schema.String),
  /** `simulator`, or the base URL. */
  provider: Schema.optional(Schema.String),
  /** Non-blank input lines. */
  lines: Schema.optional(Schema.Int),
  /** Input lines that could not be sent (they fail without a call, and are not in the checkpoint). */
  rejected: Schema.optional(Schema.Int)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Meta = typeof Meta.Type

const decodeMeta = Schema.decodeUnknownOption(Meta)

/**
 * The run's `Meta`, or what can be read of it (`argv` only, from older runs).
 *
 * @since 0.1.0
 * @category models
 */
export const metaOf = (info: CheckpointStore.RunInfo): Meta => Option.getOrElse(decodeMeta(info.meta), () => ({ argv: [] }))

/**
 * The fingerprint a run is opened with: what it sends to, not what it reads
 * (the input is checked item by item).
 *
 * @since 0.1.0
 * @category models
 */
export const fingerprint = (model: string, provider: string): string => CheckpointStore.fingerprintOf([model, provider])

/**
 * The command that deletes a run, for messages that suggest it.
 *
 * @since 0.1.0
 * @category formatting
 */
export const forgetCommand = (runId: string, db: string): string => `effect-batch runs forget ${quoted(runId)} --db ${quoted(db)}`

const quoted = (word: string): string => /^[\w./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`

/**
 * The command line that resumes a run: the same one.
 *
 * @since 0.1.0
 * @category formatting
 */
export const resumeCommand = (argv: ReadonlyArray<string>): string => `effect-batch ${argv.map(quoted).join(" ")}`

/**
 * What one pass over the input found.
 *
 * @since 0.1.0
 * @category models
 */
export interface Scan {
  /** Non-blank lines. */
  readonly lines: number
  /** Lines sent to the batch (its items). */
  readonly entries: number
  /** Lines that cannot be sent. */
  readonly rejected: number
}

const refusal = (runId: string, db: string, what: string) =>
  new UsageError({
    message: `run ${JSON.stringify(runId)} in ${db} ${what}; nothing was changed. ` +
      `Resume it with its own input and model, use another --run-id, or delete it: ${forgetCommand(runId, db)}`
  })

/**
 * Reads the input once, counting its lines, and checks each line that has a
 * recorded outcome against it: the first line that differs (or recorded
 * items past the input's end) fails with a `UsageError` naming it. Each
 * chunk of lines, checked, goes to `onChunk` with its recorded outcomes
 * (how `export` writes in the same pass); `lines` stops after that many.
 *
 * @since 0.1.0
 * @category checking
 */
export const scan = <E = never>(options: {
  readonly input: string
  readonly runId: string
  readonly db: string
  readonly recorded: ReadonlyMap<string, CheckpointStore.OutcomeRecord>
  /** The run's input file, when known, to name it in the refusal. */
  readonly recordedInput?: string | undefined
  readonly lines?: number | undefined
  readonly onChunk?: ((items: ReadonlyArray<Checked>) => Effect.Effect<void, E>) | undefined
}): Effect.Effect<Scan, UsageError | PlatformError.PlatformError | E, FileSystem.FileSystem> =>
  Effect.suspend(() => {
    const byIndex = new Map<number, CheckpointStore.OutcomeRecord>()
    for (const outcome of options.recorded.values()) byIndex.set(outcome.index, outcome)
    let lines = 0
    let entries = 0
    let lastLine = 0
    const started = options.recordedInput === undefined || options.recordedInput === options.input
      ? "was started with another input"
      : `was started with the input ${options.recordedInput}`
    const { onChunk } = options
    return JsonlInput.read(options.input).pipe(
      options.lines === undefined ? identity : Stream.take(options.lines),
      Stream.runForEachChunk((chunk): Effect.Effect<void, UsageError | E> => {
        const checked: Array<Checked> = []
        for (const item of chunk) {
          lines++
          lastLine = item.line
          if (item._tag === "Rejected") {
            checked.push({ item, outcome: undefined })
            continue
          }
          const index = entries++
          const outcome = byIndex.get(index)
          if (outcome !== undefined && outcome.itemKey !== CheckpointStore.itemKeyOf(index, item)) {
            return Effect.fail(refusal(
              options.runId,
              options.db,
              `${started}: line ${item.line} of ${options.input} is not the line it recorded at that place`
            ))
          }
          checked.push({ item, outcome })
        }
        return onChunk === undefined ? Effect.void : onChunk(checked)
      }),
      Effect.zipRight(Effect.suspend(() => {
        let past = 0
        for (const index of byIndex.keys()) if (index >= entries) past++
        return past === 0
          ? Effect.succeed({ lines, entries, rejected: lines - entries })
          : Effect.fail(refusal(
              options.runId,
              options.db,
              `${started}: ${options.input} ends at line ${lastLine}, and the run recorded ${past} items past it`
            ))
      }))
    )
  })

/**
 * An input line, checked against the checkpoint, with the outcome recorded
 * for it (`undefined`: none, or a line that could not be sent).
 *
 * @since 0.1.0
 * @category checking
 */
export interface Checked {
  readonly item: JsonlInput.Item
  readonly outcome: CheckpointStore.OutcomeRecord | undefined
}

/**
 * Checks that `run` may go on under `runId` before it touches a file: a
 * recorded run must have been started with the same model, provider and
 * input. Answers the input's `Scan`, for the run's `Meta`.
 *
 * @since 0.1.0
 * @category checking
 */
export const check = (options: {
  readonly store: CheckpointStore.Store
  readonly runId: string
  readonly db: string
  readonly input: string
  readonly model: string
  readonly provider: string
}): Effect.Effect<Scan, UsageError | PlatformError.PlatformError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const { db, runId, store } = options
    const storeError = (error: CheckpointStore.CheckpointError) =>
      new UsageError({ message: `cannot use the checkpoint database ${db}: ${error.message}` })
    const info = yield* Effect.mapError(store.get(runId), storeError)
    if (Option.isNone(info)) {
      return yield* scan({ input: options.input, runId, db, recorded: new Map() })
    }
    const meta = metaOf(info.value)
    if (info.value.fingerprint !== fingerprint(options.model, options.provider)) {
      const what = meta.model !== undefined && meta.model !== options.model
        ? `was started with --model ${meta.model}, and this command has --model ${options.model}`
        : meta.provider !== undefined && meta.provider !== options.provider
          ? `was started against ${providerName(meta.provider)}, and this command uses ${providerName(options.provider)}`
          : "was started with another model or provider"
      return yield* Effect.fail(refusal(runId, db, what))
    }
    const recorded = yield* Effect.mapError(store.load(runId), storeError)
    return yield* scan({ input: options.input, runId, db, recorded, recordedInput: meta.input })
  })

const providerName = (provider: string) => provider === "simulator" ? "the simulator (--simulate)" : `--base-url ${provider}`

const StoredCompletion = Schema.Struct({
  content: Schema.String,
  usage: Schema.Struct({ promptTokens: Schema.Number, completionTokens: Schema.Number })
})
const decodeCompletion = Schema.decodeUnknownEither(StoredCompletion)

/**
 * The results-file line of an input line, from what the checkpoint recorded
 * for it (`undefined`: nothing, the item never settled). The same `index`,
 * `line`, `id`, status and answer as the run wrote; `cost` is what the run
 * recorded paying, and there is no `source`.
 *
 * @since 0.1.0
 * @category export
 */
export const recordOf = (
  item: JsonlInput.Item,
  outcome: CheckpointStore.OutcomeRecord | undefined,
  notRun: TaskResult.SkipReason
): ResultsWriter.OutputRecord => {
  const head = ResultsWriter.headOf(item)
  if (item._tag === "Rejected") return ResultsWriter.recordOf(item, ResultsWriter.rejectedResult(item))
  if (outcome === undefined) return { ...head, status: "skipped", reason: notRun, attempts: 0, cost: 0 }
  const cost = outcome.cost ?? 0
  if (outcome.status === "succeeded") {
    const value = decodeCompletion(outcome.value)
    return Either.isRight(value)
      ? {
          ...head,
          status: "succeeded",
          output: value.right.content,
          attempts: outcome.attempts,
          tokens: { prompt: value.right.usage.promptTokens, completion: value.right.usage.completionTokens },
          cost
        }
      : { ...head, status: "succeeded", attempts: outcome.attempts, cost }
  }
  if (outcome.status === "skipped") {
    return { ...head, status: "skipped", reason: skipReason(outcome.reason) ?? notRun, attempts: outcome.attempts, cost }
  }
  const error = outcome.error
  return {
    ...head,
    status: "failed",
    error: {
      tag: outcome.errorClass ?? error?.tag ?? "Error",
      message: error?.message ?? "failed",
      ...(error?.status === undefined ? {} : { status: error.status }),
      ...(error?.code === undefined ? {} : { code: error.code })
    },
    attempts: outcome.attempts,
    cost
  }
}

const skipReasons: ReadonlyArray<TaskResult.SkipReason> = ["quota", "budget", "failFast", "interrupted"]
const skipReason = (reason: string | undefined): TaskResult.SkipReason | undefined =>
  skipReasons.find((r) => r === reason)

/**
 * Why the items a run never settled were not run: its stop reason, or
 * `interrupted` (a run that died, or is running now).
 *
 * @since 0.1.0
 * @category export
 */
export const notRunReason = (info: CheckpointStore.RunInfo): TaskResult.SkipReason =>
  skipReason(info.reason) ?? "interrupted"
