/**
 * Writes the results of a run as JSONL, one object per item, as items settle.
 *
 * Each line holds `index` (0-based among the input's non-blank lines), `line`
 * (its line number), `id` (when the input had one), `status`
 * (`succeeded | failed | skipped`), then `output` (the completion text),
 * `error` (`{ tag, message }`, plus `status` and `code` when the provider
 * sent them) or `reason` (why it was skipped), then `attempts`, `tokens`
 * (`{ prompt, completion }`, when known), `cost` (USD this run paid for the
 * item: `0` for a cached or shared answer, and for failures, which providers
 * do not bill) and `source` (`call | cache | checkpoint | shared`).
 *
 * The path is checked (`check`) before anything else is touched, and the
 * file opened (created or truncated) only once the run is known to start, so
 * a path that cannot be written fails up front with a `UsageError` naming it,
 * the input file is refused as an output, and a refused run leaves an
 * existing results file as it was. Every batch of lines is handed to
 * the operating system with one `write` as soon as it settles (no buffering in
 * the process), so a crash of the process loses only the items still in
 * flight. Lines are written in completion order, not input order: join on
 * `index` or `line`.
 *
 * What it does not promise: durability against a crash of the machine (no
 * `fsync` per line); the order of lines.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import type * as PlatformError from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import type * as OpenAiCompat from "../llm/OpenAiCompat.js"
import type * as JsonlInput from "../llm/JsonlInput.js"
import * as TaskResult from "../TaskResult.js"
import * as TaskError from "../TaskError.js"
import { dirname } from "node:path"
import { UsageError } from "./CliError.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ErrorRecord {
  readonly tag: string
  readonly message: string
  readonly status?: number
  readonly code?: string
}

/**
 * One line of the results file.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutputRecord {
  readonly index: number
  readonly line: number
  readonly id?: string | number
  readonly status: "succeeded" | "failed" | "skipped"
  readonly output?: string
  readonly error?: ErrorRecord
  readonly reason?: TaskResult.SkipReason
  readonly attempts: number
  readonly tokens?: { readonly prompt: number, readonly completion: number }
  readonly cost: number
  readonly source?: TaskResult.Source
}

/**
 * Where an item came from in the input.
 *
 * @since 0.1.0
 * @category models
 */
export interface Origin {
  readonly index: number
  readonly line: number
  readonly id: string | number | undefined
}

const errorRecord = (tag: string, error: unknown): ErrorRecord => {
  const message = error instanceof Error || (Predicate.isRecord(error) && typeof error["message"] === "string")
    ? String((error as { readonly message: string }).message)
    : String(error)
  const record: { tag: string, message: string, status?: number, code?: string } = { tag, message }
  if (TaskError.isTaskError(error)) {
    if ("status" in error && typeof error.status === "number") record.status = error.status
    if ("code" in error && typeof error.code === "string") record.code = error.code
  }
  return record
}

/**
 * Where a results-file line comes from: `index`, `line`, and `id` when the
 * input had one.
 *
 * @since 0.1.0
 * @category formatting
 */
export const headOf = (origin: Origin): Pick<OutputRecord, "index" | "line" | "id"> =>
  origin.id === undefined ? { index: origin.index, line: origin.line } : { index: origin.index, line: origin.line, id: origin.id }

/**
 * The results-file line of one item.
 *
 * @since 0.1.0
 * @category formatting
 */
export const recordOf = (
  origin: Origin,
  result: TaskResult.TaskResult<OpenAiCompat.ChatCompletion, unknown>
): OutputRecord => {
  const head = headOf(origin)
  switch (result._tag) {
    case "Succeeded": {
      const { content, cost, usage } = result.value
      return {
        ...head,
        status: "succeeded",
        output: content,
        attempts: result.attempts,
        tokens: { prompt: usage.promptTokens, completion: usage.completionTokens },
        // Paid now: a call or a provider batch; not a cached, shared or checkpointed answer.
        cost: result.source === "call" || result.source === "batch" ? cost : 0,
        source: result.source
      }
    }
    case "Failed":
      return { ...head, status: "failed", error: errorRecord(result.errorClass, result.error), attempts: result.attempts, cost: 0 }
    case "Skipped":
      return { ...head, status: "skipped", reason: result.reason, attempts: result.attempts, cost: 0 }
  }
}

/**
 * A line of the input that cannot be sent, as the batch would report it:
 * failed for good (`Permanent`, naming `file:line`), no attempt.
 *
 * @since 0.1.0
 * @category formatting
 */
export const rejectedResult = (rejected: JsonlInput.Rejected): TaskResult.Failed<TaskError.Permanent> =>
  TaskResult.failed(rejected.index, new TaskError.Permanent({ message: rejected.message }), "Permanent", 0, 0)

/**
 * @since 0.1.0
 * @category models
 */
export interface Writer {
  readonly path: string
  /** Appends one line per record, in one write; calls are serialized. */
  readonly write: (records: ReadonlyArray<OutputRecord>) => Effect.Effect<void, PlatformError.PlatformError>
  /** Lines written so far. */
  readonly written: Effect.Effect<number>
}

const describe = (error: PlatformError.PlatformError): string => {
  if (error._tag === "SystemError") {
    switch (error.reason) {
      case "NotFound":
        return "its directory does not exist"
      case "PermissionDenied":
        return "permission denied"
      default:
        return error.description ?? error.reason
    }
  }
  return error.message
}

/** Whether two paths are the same file (both exist, same device and inode). */
const sameFile = (fs: FileSystem.FileSystem, a: string, b: string): Effect.Effect<boolean> =>
  Effect.all([fs.stat(a), fs.stat(b)]).pipe(
    Effect.map(([x, y]) => x.dev === y.dev && Option.isSome(x.ino) && Option.isSome(y.ino) && x.ino.value === y.ino.value),
    Effect.orElseSucceed(() => false)
  )

/**
 * Checks, without creating or changing anything, that `open` would succeed:
 * the path is not `input`, not a folder, and can be written (the file, or
 * the folder it would be created in).
 *
 * @since 0.1.0
 * @category constructors
 */
export const check = (
  path: string,
  options: { readonly input?: string | undefined } = {}
): Effect.Effect<void, UsageError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const cannot = (why: string) => new UsageError({ message: `cannot write the results to ${path}: ${why}` })
    if (options.input !== undefined && (yield* sameFile(fs, path, options.input))) {
      return yield* new UsageError({ message: `--out ${path} is the input file; choose another path for the results` })
    }
    const info = yield* Effect.option(fs.stat(path))
    if (Option.isSome(info) && info.value.type === "Directory") return yield* cannot("it is a folder")
    const target = Option.isSome(info) ? path : dirname(path)
    yield* fs.access(target, { writable: true }).pipe(Effect.mapError((error) => cannot(describe(error))))
  })

/**
 * Opens (creates or truncates) the results file for the length of the scope.
 * `input`, when given, is refused as the output.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (
  path: string,
  options: { readonly input?: string | undefined } = {}
): Effect.Effect<Writer, UsageError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (options.input !== undefined && (yield* sameFile(fs, path, options.input))) {
      return yield* new UsageError({ message: `--out ${path} is the input file; choose another path for the results` })
    }
    const file = yield* fs.open(path, { flag: "w" }).pipe(
      Effect.mapError((error) => new UsageError({ message: `cannot write the results to ${path}: ${describe(error)}` }))
    )
    const lock = yield* Effect.makeSemaphore(1)
    const encoder = new TextEncoder()
    let written = 0
    return {
      path,
      write: (records) =>
        records.length === 0
          ? Effect.void
          : lock.withPermits(1)(Effect.suspend(() => {
              let text = ""
              for (const record of records) text += `${JSON.stringify(record)}\n`
              return Effect.map(file.writeAll(encoder.encode(text)), () => {
                written += records.length
              })
            })),
      written: Effect.sync(() => written)
    }
  })
