/**
 * The `effect-batch` command line: `run` and `simulate` under one root, and
 * `main`, which runs it on an argument vector and answers the exit code.
 *
 * `main` never fails: usage errors are printed on stderr as
 * `effect-batch: <message>` (`@effect/cli` prints its own validation
 * errors), other failures with their cause, and the exit follows
 * `CliError.exitCodeOf`. It needs the platform's `FileSystem`, `Path` and
 * `Terminal` (for `@effect/cli`) and an `HttpClient`; `bin.ts` provides the
 * Node ones. Tests run it in-process with the same layers.
 *
 * What it does not promise: the exit code of `--help` and `--version` is 0,
 * whatever else was on the command line.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import type * as CliApp from "@effect/cli/CliApp"
import * as ValidationError from "@effect/cli/ValidationError"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as CliError from "./CliError.js"
import * as BatchesCommand from "./BatchesCommand.js"
import * as RunCommand from "./RunCommand.js"
import * as RunsCommand from "./RunsCommand.js"
import * as ServeCommand from "./ServeCommand.js"
import * as SimulateCommand from "./SimulateCommand.js"

/**
 * @since 0.1.0
 * @category constants
 */
export const version = "0.1.0"

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "effect-batch",
  {},
  () => Effect.fail(new CliError.UsageError({ message: "missing command: run, simulate, runs, export or serve (see --help)" }))
).pipe(
  Command.withDescription("Run large batches of LLM calls as fast as the provider allows, never past its limits."),
  Command.withSubcommands([
    RunCommand.command,
    SimulateCommand.command,
    RunsCommand.runsCommand,
    RunsCommand.exportCommand,
    BatchesCommand.command,
    ServeCommand.command
  ])
)

const cli = Command.run(command, { name: "effect-batch", version })

const report = (exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> => {
  if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return Effect.void
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    if (error instanceof CliError.UsageError) return Console.error(`effect-batch: ${error.message}`)
    // Printed by @effect/cli, or already shown in the report.
    if (error instanceof CliError.ItemsUnsuccessful || ValidationError.isValidationError(error)) return Effect.void
  }
  return Console.error(`effect-batch: failed\n${Cause.pretty(exit.cause)}`)
}

/**
 * Runs the command line `argv` (as `process.argv`: runtime, script, then the
 * arguments); the exit code.
 *
 * @since 0.1.0
 * @category running
 */
export const main = (
  argv: ReadonlyArray<string>
): Effect.Effect<number, never, CliApp.CliApp.Environment | HttpClient.HttpClient> =>
  cli(argv).pipe(
    Effect.exit,
    Effect.flatMap((exit) => Effect.as(report(exit), CliError.exitCodeOf(exit)))
  )
