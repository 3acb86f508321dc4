/**
 * The provider batches of a run made with `run … --mode batch --run-id ID`:
 * `effect-batch batches status ID` lists its shards (round, model, lines,
 * state, the provider's batch id); `effect-batch batches attach ID` runs
 * it again as it was started (input, results file, provider, flags, all
 * kept with the run): it re-attaches to its batches, waits for them and
 * writes every line; `effect-batch batches cancel ID --base-url URL`
 * cancels, at the provider, every batch not yet ingested.
 *
 * What it does not promise: `cancel` needs the provider's URL and key (the
 * checkpoint does not keep them); a run's simulator ends with its process,
 * so the batches of a `--simulate` run cannot be cancelled from here.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as CheckpointStore from "../CheckpointStore.js"
import * as AnthropicBatch from "../llm/AnthropicBatch.js"
import * as BatchApi from "../llm/BatchApi.js"
import * as BatchProvider from "../llm/BatchProvider.js"
import * as OpenAiBatch from "../llm/OpenAiBatch.js"
import * as BatchModeRun from "./BatchModeRun.js"
import { ItemsUnsuccessful, UsageError } from "./CliError.js"
import * as RunCommand from "./RunCommand.js"
import { dbOption, storeError, storeOf } from "./RunsCommand.js"

const runIdArg = Args.text({ name: "run-id" }).pipe(Args.withDescription("The --run-id of a run made with --mode batch."))

/**
 * One line per shard, and the totals by state.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatShards = (runId: string, shards: ReadonlyArray<BatchApi.ShardView>): string => {
  if (shards.length === 0) return `run ${runId} has no provider batches (was it run with --mode batch?)`
  const rows = shards.map((s) =>
    [
      s.key.padEnd(6),
      s.model.padEnd(16),
      `${s.lines} lines`.padEnd(12),
      (s.state + (s.cancelled ? " (cancelled)" : "")).padEnd(22),
      s.batch ?? "-",
      s.again > 0 ? `  ${s.again} to the next round` : ""
    ].join(" ").trimEnd())
  const byState = new Map<string, number>()
  for (const s of shards) byState.set(s.state, (byState.get(s.state) ?? 0) + 1)
  const totals = Array.from(byState, ([state, n]) => `${n} ${state}`).join(", ")
  return ["shard  model            lines        state                  batch", ...rows, `${shards.length} shards: ${totals}`].join("\n")
}

/** The run `runId` of the database `db` and its store (scoped); a run that is not there is a usage error. */
const runOf = (db: string, runId: string) =>
  Effect.gen(function*() {
    const store = yield* storeOf(db)
    const run = yield* store.get(runId).pipe(Effect.mapError(storeError(db)))
    if (Option.isNone(run)) return yield* new UsageError({ message: `no run ${JSON.stringify(runId)} in ${db}` })
    return { store, info: run.value }
  })

const shardsOf = (db: string, runId: string) =>
  Effect.gen(function*() {
    const { store } = yield* runOf(db, runId)
    return yield* BatchApi.shards(runId).pipe(
      Effect.provideService(CheckpointStore.CheckpointStore, store),
      Effect.mapError(storeError(db))
    )
  })

/**
 * @since 0.1.0
 * @category commands
 */
export const statusCommand = Command.make("status", { runId: runIdArg, db: dbOption }, ({ db, runId }) =>
  Effect.scoped(Effect.flatMap(shardsOf(db, runId), (shards) => Console.log(formatShards(runId, shards))))).pipe(
  Command.withDescription("List a batch-mode run's shards: state and the provider's batch id.")
)

/**
 * @since 0.1.0
 * @category commands
 */
export const cancelCommand = Command.make(
  "cancel",
  {
    runId: runIdArg,
    db: dbOption,
    baseUrl: Options.text("base-url").pipe(
      Options.withPseudoName("URL"),
      Options.withDescription("Base URL of the provider the run used, e.g. https://api.openai.com/v1.")
    ),
    apiKeyEnv: Options.text("api-key-env").pipe(
      Options.withPseudoName("VAR"),
      Options.withDescription("Environment variable holding the API key."),
      Options.withDefault("OPENAI_API_KEY")
    )
  },
  ({ apiKeyEnv, baseUrl, db, runId }) =>
    Effect.scoped(Effect.gen(function*() {
      const { info, store } = yield* runOf(db, runId)
      const apiKey = yield* Config.redacted(apiKeyEnv).pipe(
        Effect.mapError(() => new UsageError({ message: `the API key is read from the environment variable ${apiKeyEnv}, which is not set` }))
      )
      if (!/^https?:\/\/\S+$/.test(baseUrl)) return yield* new UsageError({ message: `--base-url must be an http(s) URL, got ${JSON.stringify(baseUrl)}` })
      // The run's own provider API: an Anthropic run's batches are Message Batches.
      const kept = (info.meta as { readonly run?: RunCommand.BatchRunMeta } | undefined)?.run
      const provider = kept?.batchApi === "anthropic"
        ? yield* AnthropicBatch.make({ baseUrl, apiKey })
        : yield* OpenAiBatch.make({ baseUrl, apiKey })
      const cancelled = yield* BatchApi.cancel(runId).pipe(
        Effect.provideService(BatchProvider.BatchProvider, provider),
        Effect.provideService(CheckpointStore.CheckpointStore, store),
        Effect.catchTag("CheckpointError", (error) => Effect.fail(storeError(db)(error)))
      )
      yield* Console.log(
        `${cancelled} batch${cancelled === 1 ? "" : "es"} cancelled; run the same run command again to collect what they had done`
      )
    }))
).pipe(Command.withDescription("Cancel a batch-mode run's batches at the provider (what ran is kept, the rest is skipped)."))

/**
 * @since 0.1.0
 * @category commands
 */
export const attachCommand = Command.make(
  "attach",
  {
    runId: runIdArg,
    db: dbOption,
    out: Options.file("out").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("Write the results here instead of the run's own results file."),
      Options.optional
    )
  },
  ({ db, out, runId }) =>
    Effect.gen(function*() {
      const { info } = yield* Effect.scoped(runOf(db, runId))
      const meta = info.meta as { readonly mode?: string, readonly run?: RunCommand.BatchRunMeta } | undefined
      const kept = meta?.mode === "batch" ? meta.run : undefined
      if (kept === undefined) return yield* new UsageError({ message: `run ${runId} was not made with --mode batch or auto: resume it with its run command` })
      if (kept.simulate) {
        return yield* new UsageError({ message: `run ${runId} used --simulate: its simulator ended with its process, and its batches with it` })
      }
      const outcome = yield* RunCommand.runInBatchMode({
        ...kept,
        out: Option.getOrElse(out, () => kept.out),
        runId,
        db
      })
      yield* Console.log(BatchModeRun.summary(outcome))
      const failed = outcome.report.failed + outcome.rejected
      if (failed + outcome.report.skipped > 0) return yield* new ItemsUnsuccessful({ failed, skipped: outcome.report.skipped })
    })
).pipe(Command.withDescription("Run a batch-mode run again as it was started: re-attach to its batches and write every result."))

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("batches").pipe(
  Command.withDescription("The provider batches of a run made with --mode batch: status, attach, cancel."),
  Command.withSubcommands([statusCommand, attachCommand, cancelCommand])
)
