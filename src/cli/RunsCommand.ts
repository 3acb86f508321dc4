/**
 * The checkpointed runs of a database: `effect-batch runs` lists them with
 * their progress and cost, `effect-batch export ID --out FILE` writes a run's
 * recorded outcomes as JSONL in input order.
 *
 * What it does not promise: an export holds what the checkpoint recorded —
 * the batch's items (the input's line numbers and ids are in the results file
 * of the run, not in the checkpoint), and nothing for items never settled.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as CheckpointStore from "../CheckpointStore.js"
import { UsageError } from "./CliError.js"
import { checkpointLayer } from "./RunCommand.js"

const dbOption = Options.file("db").pipe(
  Options.withPseudoName("FILE"),
  Options.withDescription("SQLite file of the checkpoints."),
  Options.withDefault("effect-batch.db")
)

const storeOf = (db: string) =>
  Effect.flatMap(Layer.build(checkpointLayer(db)), (context) => Effect.succeed(Context.get(context, CheckpointStore.CheckpointStore)))

const storeError = (db: string) => (error: CheckpointStore.CheckpointError) =>
  new UsageError({ message: `checkpoint database ${db}: ${error.message}` })

/**
 * One line per run: id, state, done/failed/total, cost, last update.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatRuns = (runs: ReadonlyArray<CheckpointStore.RunInfo>): string => {
  if (runs.length === 0) return "no runs"
  const rows = runs.map((run) => [
    run.runId,
    run.reason === undefined ? run.state : `${run.state} (${run.reason})`,
    `${run.counts.succeeded} done, ${run.counts.failed} failed${run.total === undefined ? "" : ` of ${run.total}`}`,
    `$${run.cost.toFixed(4)}`,
    new Date(run.updatedAt).toISOString()
  ])
  const header = ["run", "state", "progress", "cost", "updated"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  return [header, ...rows].map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

/**
 * @since 0.1.0
 * @category commands
 */
export const runsCommand = Command.make("runs", { db: dbOption }, ({ db }) =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* storeOf(db)
    const runs = yield* Effect.mapError(store.list, storeError(db))
    yield* Console.log(formatRuns(runs))
  }))).pipe(Command.withDescription("List the checkpointed runs: state, progress, cost."))

/**
 * A run's recorded outcomes as JSONL, in input order.
 *
 * @since 0.1.0
 * @category running
 */
export const exportRun = (db: string, runId: string, out: string) =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* storeOf(db)
    const info = yield* Effect.mapError(store.get(runId), storeError(db))
    if (Option.isNone(info)) return yield* new UsageError({ message: `no run "${runId}" in ${db} (see: effect-batch runs --db ${db})` })
    const outcomes = [...(yield* Effect.mapError(store.load(runId), storeError(db))).values()].sort((a, b) => a.index - b.index)
    const lines = outcomes.map((outcome) => {
      const value = outcome.value as { readonly content?: unknown } | undefined
      return JSON.stringify({
        index: outcome.index,
        status: outcome.status,
        ...(outcome.status === "succeeded" ? { output: typeof value?.content === "string" ? value.content : value } : {}),
        ...(outcome.error === undefined ? {} : { error: { tag: outcome.error.tag, message: outcome.error.message } }),
        attempts: outcome.attempts,
        ...(outcome.cost === undefined ? {} : { cost: outcome.cost })
      })
    })
    const fs = yield* FileSystem.FileSystem
    yield* fs.writeFileString(out, lines.length === 0 ? "" : `${lines.join("\n")}\n`).pipe(
      Effect.mapError((error) => new UsageError({ message: `cannot write ${out}: ${error.message}` }))
    )
    return { written: lines.length, info: info.value }
  }))

/**
 * @since 0.1.0
 * @category commands
 */
export const exportCommand = Command.make(
  "export",
  {
    runId: Args.text({ name: "ID" }).pipe(Args.withDescription("The run to export.")),
    out: Options.file("out").pipe(Options.withAlias("o"), Options.withPseudoName("FILE")),
    db: dbOption
  },
  ({ db, out, runId }) =>
    Effect.flatMap(exportRun(db, runId, out), ({ info, written }) =>
      Console.error(`${written} outcomes of run ${runId} (${info.state}${info.total === undefined ? "" : `, ${info.total} items`}) in ${out}`))
).pipe(Command.withDescription("Write a checkpointed run's outcomes as JSONL, in input order."))
