/**
 * The checkpointed runs of a database: `effect-batch runs` lists them with
 * their progress and cost, `effect-batch runs forget ID` deletes one,
 * `effect-batch export ID --out FILE` writes a run's results in input order,
 * one line per input line, as the run's own results file has them.
 *
 * None of them creates a database: a `--db` that does not exist is a usage
 * error, and a file that is not one of ours is only read.
 *
 * What it does not promise: `export` reads the run's input file again (the
 * checkpoint holds outcomes, not the input's line numbers and ids), so it
 * needs that file, unchanged; it refuses one that differs from what the run
 * recorded, naming the line.
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
import * as CheckpointedRun from "./CheckpointedRun.js"
import { UsageError } from "./CliError.js"
import * as ResultsWriter from "./ResultsWriter.js"
import { checkpointLayer } from "./RunCommand.js"

/**
 * @since 0.1.0
 * @category flags
 */
export const dbOption = Options.file("db").pipe(
  Options.withPseudoName("FILE"),
  Options.withDescription("SQLite file of the checkpoints."),
  Options.withDefault("effect-batch.db")
)

/**
 * The store of an existing database; a missing file is refused rather than created.
 *
 * @since 0.1.0
 * @category internals
 */
export const storeOf = (db: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (!(yield* Effect.orElseSucceed(fs.exists(db), () => false))) {
      return yield* new UsageError({ message: `no checkpoint database ${db} (runs are recorded by: effect-batch run … --run-id ID --db ${db})` })
    }
    return Context.get(yield* Layer.build(checkpointLayer(db)), CheckpointStore.CheckpointStore)
  })

/**
 * @since 0.1.0
 * @category internals
 */
export const storeError = (db: string) => (error: CheckpointStore.CheckpointError) =>
  new UsageError({ message: `checkpoint database ${db}: ${error.message}` })

/**
 * One line per run: id, state, done/failed/total, cost, last update.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatRuns = (runs: ReadonlyArray<CheckpointStore.RunInfo>): string => {
  if (runs.length === 0) return "no runs"
  const rows = runs.map((run) => {
    // Lines that could not be sent fail without a call and are not in the checkpoint: the run counted them as failed.
    const { lines, rejected = 0 } = CheckpointedRun.metaOf(run)
    const total = lines ?? run.total
    return [
      run.runId,
      run.reason === undefined ? run.state : `${run.state} (${run.reason})`,
      `${run.counts.succeeded} done, ${run.counts.failed + rejected} failed${total === undefined ? "" : ` of ${total}`}`,
      `$${run.cost.toFixed(4)}`,
      new Date(run.updatedAt).toISOString()
    ]
  })
  const header = ["run", "state", "progress", "cost", "updated"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  return [header, ...rows].map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

/**
 * @since 0.1.0
 * @category commands
 */
export const forgetCommand = Command.make(
  "forget",
  { runId: Args.text({ name: "ID" }).pipe(Args.withDescription("The run to delete, with its outcomes.")), db: dbOption },
  ({ db, runId }) =>
    Effect.scoped(Effect.gen(function*() {
      const store = yield* storeOf(db)
      const existed = yield* Effect.mapError(store.forget(runId), storeError(db))
      if (!existed) return yield* new UsageError({ message: `no run ${JSON.stringify(runId)} in ${db} (see: effect-batch runs --db ${db})` })
      yield* Console.error(`run ${runId} deleted from ${db}`)
    }))
).pipe(Command.withDescription("Delete a checkpointed run and its outcomes (its id can then start a new run)."))

/**
 * @since 0.1.0
 * @category commands
 */
export const runsCommand = Command.make("runs", { db: dbOption }, ({ db }) =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* storeOf(db)
    const runs = yield* Effect.mapError(store.list, storeError(db))
    yield* Console.log(formatRuns(runs))
  }))).pipe(
  Command.withDescription("List the checkpointed runs: state, progress, cost."),
  Command.withSubcommands([forgetCommand])
)

/**
 * A run's results as JSONL, one line per input line, in input order: its
 * input read again and checked against the checkpoint, each line's recorded
 * outcome (or `skipped` for lines never settled). Written to a temporary file
 * beside `out`, then moved over it, so a refused export leaves `out` as it was.
 *
 * @since 0.1.0
 * @category running
 */
export const exportRun = (db: string, runId: string, out: string, options: { readonly input?: string | undefined } = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const store = yield* storeOf(db)
    const info = yield* Effect.mapError(store.get(runId), storeError(db))
    if (Option.isNone(info)) return yield* new UsageError({ message: `no run "${runId}" in ${db} (see: effect-batch runs --db ${db})` })
    const meta = CheckpointedRun.metaOf(info.value)
    const input = options.input ?? meta.input
    if (input === undefined) {
      return yield* new UsageError({ message: `run ${runId} does not say which input it read (it was recorded by an older version); give it with --input FILE` })
    }
    const recorded = yield* Effect.mapError(store.load(runId), storeError(db))
    yield* ResultsWriter.check(out, { input })
    const notRun = CheckpointedRun.notRunReason(info.value)
    const unreadable = (error: { readonly message: string }) => new UsageError({ message: `cannot read the input of run ${runId}, ${input}: ${error.message}` })
    const cannotWrite = (error: { readonly message: string }) => new UsageError({ message: `cannot write ${out}: ${error.message}` })
    const encoder = new TextEncoder()
    // One pass: each chunk of the input is checked against the checkpoint, then written; a refusal removes what was written.
    const temporary = `${out}.${process.pid}.tmp`
    const { lines: written } = yield* Effect.acquireUseRelease(
      Effect.mapError(fs.open(temporary, { flag: "w" }), cannotWrite),
      (file) =>
        CheckpointedRun.scan({
          input,
          runId,
          db,
          recorded,
          recordedInput: meta.input,
          // Lines appended to the input since the run was last started are not the run's.
          lines: meta.lines,
          onChunk: (checked) => {
            let text = ""
            for (const { item, outcome } of checked) text += `${JSON.stringify(CheckpointedRun.recordOf(item, outcome, notRun))}\n`
            return Effect.mapError(file.writeAll(encoder.encode(text)), cannotWrite)
          }
        }).pipe(Effect.catchTag("SystemError", "BadArgument", (error) => Effect.fail(unreadable(error)))),
      (_, exit) => exit._tag === "Failure" ? Effect.ignore(fs.remove(temporary)) : Effect.void
    )
    yield* Effect.mapError(fs.rename(temporary, out), cannotWrite)
    return { written, info: info.value }
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
    input: Options.file("input").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("The run's input file, if it moved (default: the path the run recorded)."),
      Options.optional
    ),
    db: dbOption
  },
  ({ db, input, out, runId }) =>
    Effect.flatMap(exportRun(db, runId, out, { input: Option.getOrUndefined(input) }), ({ info, written }) =>
      Console.error(`${written} lines of run ${runId} (${info.state}) in ${out}`))
).pipe(Command.withDescription("Write a checkpointed run's results as JSONL, one line per input line, in input order."))
