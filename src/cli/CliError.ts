/**
 * How the `effect-batch` CLI fails, and the exit code each failure maps to.
 *
 * - `0`: the command finished and every item succeeded;
 * - `1`: the run finished but some items failed or were skipped
 *   (`ItemsUnsuccessful`), or something broke while running (a write to the
 *   results file failed, a defect);
 * - `2`: the command never started its work: bad or missing flags, a missing
 *   input file, an output that cannot be written, a missing API key
 *   (`UsageError`, and `@effect/cli`'s own `ValidationError`);
 * - `130`: interrupted (Ctrl-C, SIGTERM), as shells report a SIGINT.
 *
 * What it does not promise: a `UsageError` is raised before any call is
 * made only for what can be checked up front; a results file that becomes
 * unwritable mid-run (disk full) fails the run with exit code 1.
 *
 * @since 0.1.0
 */
import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"

/**
 * The command line or the environment does not allow the command to start.
 * `message` says what is wrong and names the flag or path.
 *
 * @since 0.1.0
 * @category errors
 */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/**
 * A run that finished, with items that did not succeed. The report has
 * already been printed; this only carries the exit code.
 *
 * @since 0.1.0
 * @category errors
 */
export class ItemsUnsuccessful extends Data.TaggedError("ItemsUnsuccessful")<{
  readonly failed: number
  readonly skipped: number
}> {
  override get message(): string {
    return `${this.failed} items failed, ${this.skipped} skipped`
  }
}

/**
 * @since 0.1.0
 * @category exit codes
 */
export const ExitCode = {
  success: 0,
  unsuccessful: 1,
  usage: 2,
  interrupted: 130
} as const

/**
 * The exit code of a finished command.
 *
 * @since 0.1.0
 * @category exit codes
 */
export const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return ExitCode.success
  if (Cause.isInterruptedOnly(exit.cause)) return ExitCode.interrupted
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) return ExitCode.unsuccessful
  const error = failure.value
  if (error instanceof UsageError || ValidationError.isValidationError(error)) return ExitCode.usage
  return ExitCode.unsuccessful
}
