/**
 * The record of a durable run: every item's outcome, kept so that a run that
 * crashed or was stopped resumes where it was.
 *
 * A run is opened under a `runId` with a fingerprint of what defines it (see
 * `fingerprintOf`). The engine then `record`s outcomes in groups, one
 * transaction per group, and a resumed run `load`s them: items recorded as
 * succeeded come back without a call, items that failed permanently stay
 * failed unless asked, everything else runs again. Opening an existing run
 * with another fingerprint fails with `CheckpointMismatch` and changes
 * nothing. Each outcome is stored under its item key (`itemKeyOf(index,
 * item)`: the index and a hash of the item), so a resumed run whose input
 * changed is caught at the first item whose key differs from the recorded one.
 *
 * Values, run metadata and errors are JSON: every backend stores the JSON
 * text, so what `load` returns is a fresh copy equal to
 * `JSON.parse(JSON.stringify(value))`, whichever backend holds it.
 *
 * Backends: `layerMemory` (a `Map`, lost with the process) and
 * `SqlCheckpointStore.layer` (SQLite or PostgreSQL through a `SqlClient`).
 * Both are built on `make`, which owns validation, JSON and errors, so a
 * backend only moves rows.
 *
 * What it does not promise: it is not a lock, so two processes running the
 * same `runId` at once both record (the last outcome written for an item
 * wins); a run whose process died stays `running` until it is opened again
 * (its `updatedAt` says when it last recorded anything); outcomes the engine
 * had not yet handed to `record` when the process died are lost, and those
 * items run again; nothing expires: `forget` a run to delete it.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Types from "effect/Types"
import { createHash } from "node:crypto"
import * as hashing from "./internal/hashing.js"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * `running` from `open` on; `stopped` (with a `reason` such as `"quota"`,
 * `"budget"` or `"interrupted"`) or `finished` when the engine says so.
 *
 * @since 0.1.0
 * @category models
 */
export type State = "running" | "stopped" | "finished"

/**
 * @since 0.1.0
 * @category models
 */
export type Status = "succeeded" | "failed" | "skipped"

/**
 * A failure as it is recorded: enough to report it and to rebuild a
 * `TaskError` of the same class, nothing that might not be JSON.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutcomeError {
  readonly tag: string
  readonly message: string
  readonly status?: number
  readonly code?: string
}

/**
 * The outcome of one item, as the engine records it.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutcomeRecord {
  /** `itemKeyOf(index, item)`; unique within a run. */
  readonly itemKey: string
  readonly index: number
  readonly status: Status
  /** The succeeded value, JSON (the engine encodes it with the caller's Schema first). */
  readonly value?: unknown
  /** Only `tag`, `message`, `status` and `code` are kept. */
  readonly error?: OutcomeError
  /** The `TaskError` class of a failure. */
  readonly errorClass?: string
  /** Why an item was skipped. */
  readonly reason?: string
  readonly attempts: number
  readonly durationMs: number
  /** What the item cost, in the budget's unit (USD). */
  readonly cost?: number
  readonly tokens?: number
  /** Epoch milliseconds (rounded to whole ones); default: when `record` was called. Always present on what `load` returns. */
  readonly recordedAt?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Counts {
  readonly succeeded: number
  readonly failed: number
  readonly skipped: number
}

/**
 * A run and its progress so far.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunInfo {
  readonly runId: string
  readonly fingerprint: string
  /** Epoch milliseconds of the first `open`. */
  readonly createdAt: number
  /** Epoch milliseconds of the last `open`, `record` or `setState`. */
  readonly updatedAt: number
  readonly state: State
  readonly reason?: string
  /** The number of items, when the run knew it. */
  readonly total?: number
  /** The JSON given to `open`, e.g. what it takes to print a resume command. */
  readonly meta?: unknown
  /** Recorded outcomes by status (the latest outcome of each item). */
  readonly counts: Counts
  /** The sum of the recorded outcomes' `cost`. */
  readonly cost: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface OpenOptions {
  /** What defines the run (see `fingerprintOf`); resuming with another one fails with `CheckpointMismatch`. */
  readonly fingerprint: string
  /** The number of items, if known; a resumed run keeps the earlier one when this is absent. */
  readonly total?: number | undefined
  /** JSON kept with the run; a resumed run keeps the earlier one when this is absent. */
  readonly meta?: unknown
}

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = "setup" | "open" | "record" | "load" | "setState" | "list" | "get" | "forget" | "saveShards" | "loadShards"

/**
 * The state of one shard of a run sent to a provider's batch API
 * (`BatchApi`): JSON under a key unique within the run. The store keeps it
 * as it keeps outcomes, without reading it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShardRecord {
  readonly key: string
  readonly state: unknown
}

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

const reasonOf = (cause: unknown): string => {
  // A SqlError's own message is generic ("Failed to execute statement"); the driver's error says what happened.
  if (Predicate.isTagged(cause, "SqlError") && Predicate.hasProperty(cause, "cause") && cause.cause instanceof Error) {
    return cause.cause.message
  }
  return cause instanceof Error ? cause.message : String(cause)
}

/**
 * The store could not do `operation`: the database is unreachable or is not
 * one this store made (`setup`), the run does not exist, an argument is
 * invalid (the cause is an `IllegalArgumentException`), or a stored value is
 * not JSON. The message says which.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointError extends Data.TaggedError("CheckpointError")<{
  readonly operation: Operation
  readonly runId?: string
  readonly cause: unknown
}> {
  override get message(): string {
    const reason = reasonOf(this.cause)
    if (this.operation === "setup") return `the checkpoint store could not be set up: ${reason}`
    return `CheckpointStore.${this.operation}${this.runId === undefined ? "" : ` (run ${JSON.stringify(this.runId)})`} failed: ${reason}`
  }
}

const short = (fingerprint: string): string => fingerprint.length > 12 ? `${fingerprint.slice(0, 12)}…` : fingerprint

/**
 * A run was resumed with a different input than it was started with:
 * `expected` is the fingerprint (or item key) recorded, `found` the one
 * presented. Nothing was changed; start a new run or forget this one.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointMismatch extends Schema.TaggedError<CheckpointMismatch>()("CheckpointMismatch", {
  runId: Schema.String,
  expected: Schema.String,
  found: Schema.String
}) {
  override get message(): string {
    return `run ${JSON.stringify(this.runId)} was started with a different input (fingerprint ${JSON.stringify(short(this.expected))}, ` +
      `now ${JSON.stringify(short(this.found))}); resume it with its own input, or start another run (another id, or forget this one)`
  }
}

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

/**
 * Every method validates `runId` (1 to 200 characters, no control
 * characters, no surrounding whitespace) and fails with a `CheckpointError`
 * if it is not valid, or if the run does not exist (except `open`, `get` and
 * `forget`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /**
   * Creates the run in state `running`, or resumes it if it exists with the
   * same fingerprint: state back to `running`, `reason` cleared, `updatedAt`
   * now, outcomes kept. Another fingerprint fails with `CheckpointMismatch`
   * and changes nothing.
   */
  readonly open: (runId: string, options: OpenOptions) => Effect.Effect<RunInfo, CheckpointError | CheckpointMismatch>
  /**
   * Stores `outcomes` in one transaction: all or none. An outcome replaces
   * the one recorded earlier for its `itemKey` (within the group, the last
   * one wins). An invalid outcome fails the whole group, naming it.
   */
  readonly record: (runId: string, outcomes: ReadonlyArray<OutcomeRecord>) => Effect.Effect<void, CheckpointError>
  /** Every recorded outcome of the run, by `itemKey`. */
  readonly load: (runId: string) => Effect.Effect<ReadonlyMap<string, OutcomeRecord>, CheckpointError>
  readonly setState: (runId: string, state: State, reason?: string) => Effect.Effect<void, CheckpointError>
  /** Every run, most recently created first. */
  readonly list: Effect.Effect<ReadonlyArray<RunInfo>, CheckpointError>
  readonly get: (runId: string) => Effect.Effect<Option.Option<RunInfo>, CheckpointError>
  /** Deletes the run, its outcomes and its shards; `false` if there was no such run. */
  readonly forget: (runId: string) => Effect.Effect<boolean, CheckpointError>
  /**
   * Stores the state of provider batch shards in one transaction, each
   * replacing the one stored under its key: written before the call that
   * moves a shard on, so a resumed run knows what was submitted.
   */
  readonly saveShards: (runId: string, shards: ReadonlyArray<ShardRecord>) => Effect.Effect<void, CheckpointError>
  /** Every shard state of the run, in no particular order. */
  readonly loadShards: (runId: string) => Effect.Effect<ReadonlyArray<ShardRecord>, CheckpointError>
}

/**
 * Where a batch run with `checkpoint: { runId }` records its outcomes.
 *
 * @since 0.1.0
 * @category tags
 */
export class CheckpointStore extends Context.Tag("effect-batch/CheckpointStore")<CheckpointStore, Store>() {}

// ---------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------

/**
 * The key an item is recorded under: `"<index>:<hash>"`, where the hash is
 * the first 32 hex digits (128 bits) of `ResultCache.key(item)`, the SHA-256
 * of its canonical JSON. The same item at the same index always has the same
 * key, whatever the order of its object fields; any change to the item (or
 * its position) gives another. Throws `IllegalArgumentException`, as
 * `ResultCache.key` does, for an item that is not JSON (naming the path).
 *
 * @example
 * ```ts
 * CheckpointStore.itemKeyOf(0, { id: 1, prompt: "Hello" }) // "0:5f2c…" (32 hex digits after the colon)
 * ```
 *
 * @since 0.1.0
 * @category keys
 */
export const itemKeyOf = (index: number, item: unknown): string => {
  if (!Number.isSafeInteger(index) || index < 0) {
    throw new Cause.IllegalArgumentException(`CheckpointStore.itemKeyOf: index must be an integer ≥ 0, got ${index}`)
  }
  return `${index}:${hashing.hashOf(item, "CheckpointStore.itemKeyOf").slice(0, 32)}`
}

/**
 * A fingerprint of a run: the SHA-256, in lowercase hex, of `parts` in
 * order, each prefixed with its UTF-8 length so that `["ab", "c"]` and
 * `["a", "bc"]` differ. Any iterable will do, so a fingerprint can be
 * computed from a generator without holding the parts.
 *
 * What to put in it: whatever must not change while a run is resumed, and
 * can be known before the first item runs. The engine's recipe for a run of
 * `task` over `input` is
 * `fingerprintOf([definition, ...the item keys of the first items])`, with
 * `definition` e.g. `ResultCache.key({ model, params, prompt })` and as many
 * first items as it reads ahead anyway (a `Stream` never has to be read to
 * its end). A different input file is then refused by `open`, before any
 * state changes; a change further into the input is caught when its item is
 * reached, since its item key no longer matches the one recorded. The total
 * is left out on purpose: items appended to an input only add work.
 *
 * @since 0.1.0
 * @category keys
 */
export const fingerprintOf = (parts: Iterable<string>): string => {
  const hash = createHash("sha256")
  for (const part of parts) {
    if (typeof part !== "string") {
      throw new Cause.IllegalArgumentException(`CheckpointStore.fingerprintOf: parts must be strings, got ${typeof part}`)
    }
    hash.update(`${Buffer.byteLength(part, "utf8")}:`, "utf8").update(part, "utf8")
  }
  return hash.digest("hex")
}

// ---------------------------------------------------------------------------
// backends
// ---------------------------------------------------------------------------

/**
 * An outcome as a backend keeps it: `value` and `error` as JSON text,
 * absent fields as `null`.
 *
 * @since 0.1.0
 * @category backends
 */
export interface StoredOutcome {
  readonly itemKey: string
  readonly index: number
  readonly status: Status
  readonly value: string | null
  readonly error: string | null
  readonly errorClass: string | null
  readonly reason: string | null
  readonly attempts: number
  readonly durationMs: number
  readonly cost: number | null
  readonly tokens: number | null
  readonly recordedAt: number
}

/**
 * A run as a backend keeps it, with its progress: `meta` as JSON text,
 * absent fields as `null`.
 *
 * @since 0.1.0
 * @category backends
 */
export interface StoredShard {
  readonly key: string
  readonly state: string
}

/**
 * @since 0.1.0
 * @category backends
 */
export interface StoredRun {
  readonly runId: string
  readonly fingerprint: string
  readonly state: State
  readonly reason: string | null
  readonly total: number | null
  readonly meta: string | null
  readonly createdAt: number
  readonly updatedAt: number
  readonly counts: Counts
  readonly cost: number
}

/**
 * What a storage backend does, on rows `make` has validated and encoded.
 * Each method is atomic; `false` or `undefined` means there is no such run;
 * failures carry whatever the backend failed with (it becomes the `cause` of
 * a `CheckpointError`).
 *
 * @since 0.1.0
 * @category backends
 */
export interface Backend {
  /**
   * Inserts the run if it is absent; if it is present with `fingerprint`,
   * sets `state` to `running`, clears `reason`, sets `updatedAt` to `now` and
   * replaces `total` and `meta` unless `null`; otherwise changes nothing.
   * Returns the run as stored afterwards.
   */
  readonly open: (run: {
    readonly runId: string
    readonly fingerprint: string
    readonly total: number | null
    readonly meta: string | null
    readonly now: number
  }) => Effect.Effect<StoredRun, unknown>
  /** Upserts the outcomes (their keys are distinct) and sets `updatedAt`, if the run exists. */
  readonly record: (runId: string, outcomes: ReadonlyArray<StoredOutcome>, now: number) => Effect.Effect<boolean, unknown>
  readonly load: (runId: string) => Effect.Effect<ReadonlyArray<StoredOutcome> | undefined, unknown>
  readonly setState: (runId: string, state: State, reason: string | null, now: number) => Effect.Effect<boolean, unknown>
  /** Most recently created first. */
  readonly list: Effect.Effect<ReadonlyArray<StoredRun>, unknown>
  readonly get: (runId: string) => Effect.Effect<StoredRun | undefined, unknown>
  readonly forget: (runId: string) => Effect.Effect<boolean, unknown>
  /** Upserts shard states (`state` as JSON text); `false` if there is no such run. */
  readonly saveShards: (runId: string, shards: ReadonlyArray<StoredShard>, now: number) => Effect.Effect<boolean, unknown>
  /** `undefined` if there is no such run. */
  readonly loadShards: (runId: string) => Effect.Effect<ReadonlyArray<StoredShard> | undefined, unknown>
}

const maxRunIdLength = 200
const unprintable = /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}]/u

const runIdProblem = (runId: unknown): string | undefined => {
  if (typeof runId !== "string") return `must be a string, got ${typeof runId}`
  if (runId.length === 0) return "must not be empty"
  const length = [...runId].length
  if (length > maxRunIdLength) return `must have at most ${maxRunIdLength} characters, got ${length}`
  if (unprintable.test(runId)) return `must be printable (no control characters), got ${JSON.stringify(runId)}`
  if (runId.trim() !== runId) return `must not start or end with whitespace, got ${JSON.stringify(runId)}`
  return undefined
}

const invalid = (message: string) => new Cause.IllegalArgumentException(message)

const toJson = (value: unknown, what: string): string => {
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (error) {
    throw invalid(`${what} is not JSON (${error instanceof Error ? error.message : String(error)})`)
  }
  if (json === undefined) throw invalid(`${what} is not JSON (a ${typeof value})`)
  return json
}

const statuses: ReadonlySet<string> = new Set<Status>(["succeeded", "failed", "skipped"])
const states: ReadonlySet<string> = new Set<State>(["running", "stopped", "finished"])

const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0
const isAmount = (n: unknown): n is number => typeof n === "number" && Number.isFinite(n) && n >= 0

const optionalString = (value: unknown, what: string): string | null => {
  if (value === undefined) return null
  if (typeof value !== "string") throw invalid(`${what} must be a string, got ${typeof value}`)
  return value
}

const encodeError = (error: unknown, what: string): string => {
  if (!Predicate.isRecord(error) || typeof error.tag !== "string" || typeof error.message !== "string") {
    throw invalid(`${what}.error must be { tag: string, message: string, status?: number, code?: string }`)
  }
  if (error.status !== undefined && !(typeof error.status === "number" && Number.isFinite(error.status))) {
    throw invalid(`${what}.error.status must be a number, got ${String(error.status)}`)
  }
  if (error.code !== undefined && typeof error.code !== "string") throw invalid(`${what}.error.code must be a string`)
  const kept: Types.Mutable<OutcomeError> = { tag: error.tag, message: error.message }
  if (error.status !== undefined) kept.status = error.status as number
  if (error.code !== undefined) kept.code = error.code
  return JSON.stringify(kept)
}

const encodeOutcome = (outcome: OutcomeRecord, position: number, now: number): StoredOutcome => {
  if (!Predicate.isRecord(outcome)) throw invalid(`outcome ${position} must be an object`)
  const named = typeof outcome.itemKey === "string" && outcome.itemKey.length > 0
  const what = `outcome ${position}${named ? ` (item ${JSON.stringify(outcome.itemKey)})` : ""}`
  if (typeof outcome.itemKey !== "string" || outcome.itemKey.length === 0) throw invalid(`${what}: itemKey must be a non-empty string`)
  if (!isCount(outcome.index)) throw invalid(`${what}: index must be an integer ≥ 0, got ${String(outcome.index)}`)
  if (!statuses.has(outcome.status)) throw invalid(`${what}: status must be succeeded, failed or skipped, got ${String(outcome.status)}`)
  if (!isCount(outcome.attempts)) throw invalid(`${what}: attempts must be an integer ≥ 0, got ${String(outcome.attempts)}`)
  if (!isAmount(outcome.durationMs)) throw invalid(`${what}: durationMs must be a finite number ≥ 0, got ${String(outcome.durationMs)}`)
  if (outcome.cost !== undefined && !isAmount(outcome.cost)) {
    throw invalid(`${what}: cost must be a finite number ≥ 0, got ${String(outcome.cost)}`)
  }
  if (outcome.tokens !== undefined && !isCount(outcome.tokens)) {
    throw invalid(`${what}: tokens must be an integer ≥ 0, got ${String(outcome.tokens)}`)
  }
  if (outcome.recordedAt !== undefined && !(typeof outcome.recordedAt === "number" && Number.isFinite(outcome.recordedAt))) {
    throw invalid(`${what}: recordedAt must be epoch milliseconds, got ${String(outcome.recordedAt)}`)
  }
  return {
    itemKey: outcome.itemKey,
    index: outcome.index,
    status: outcome.status,
    value: outcome.value === undefined ? null : toJson(outcome.value, `${what}: value`),
    error: outcome.error === undefined ? null : encodeError(outcome.error, what),
    errorClass: optionalString(outcome.errorClass, `${what}: errorClass`),
    reason: optionalString(outcome.reason, `${what}: reason`),
    attempts: outcome.attempts,
    durationMs: outcome.durationMs,
    cost: outcome.cost ?? null,
    tokens: outcome.tokens ?? null,
    recordedAt: outcome.recordedAt === undefined ? now : Math.round(outcome.recordedAt)
  }
}

const decodeOutcome = (stored: StoredOutcome): OutcomeRecord => {
  const outcome: Types.Mutable<OutcomeRecord> = {
    itemKey: stored.itemKey,
    index: stored.index,
    status: stored.status,
    attempts: stored.attempts,
    durationMs: stored.durationMs,
    recordedAt: stored.recordedAt
  }
  if (stored.value !== null) outcome.value = JSON.parse(stored.value)
  if (stored.error !== null) outcome.error = JSON.parse(stored.error) as OutcomeError
  if (stored.errorClass !== null) outcome.errorClass = stored.errorClass
  if (stored.reason !== null) outcome.reason = stored.reason
  if (stored.cost !== null) outcome.cost = stored.cost
  if (stored.tokens !== null) outcome.tokens = stored.tokens
  return outcome
}

const decodeRun = (stored: StoredRun): RunInfo => {
  const run: Types.Mutable<RunInfo> = {
    runId: stored.runId,
    fingerprint: stored.fingerprint,
    createdAt: stored.createdAt,
    updatedAt: stored.updatedAt,
    state: stored.state,
    counts: { ...stored.counts },
    cost: stored.cost
  }
  if (stored.reason !== null) run.reason = stored.reason
  if (stored.total !== null) run.total = stored.total
  if (stored.meta !== null) run.meta = JSON.parse(stored.meta)
  return run
}

/**
 * A `Store` on `backend`: validates arguments, encodes and decodes JSON,
 * reads the `Clock`, and turns every failure into a `CheckpointError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (backend: Backend): Store => {
  const attempt = <A>(operation: Operation, runId: string | undefined, f: () => A): Effect.Effect<A, CheckpointError> =>
    Effect.try({
      try: f,
      catch: (cause) => new CheckpointError(runId === undefined ? { operation, cause } : { operation, runId, cause })
    })
  const call = <A>(operation: Operation, runId: string, effect: Effect.Effect<A, unknown>): Effect.Effect<A, CheckpointError> =>
    Effect.mapError(effect, (cause) => new CheckpointError({ operation, runId, cause }))
  const checked = <A, E>(
    operation: Operation,
    runId: string,
    f: () => Effect.Effect<A, E>
  ): Effect.Effect<A, E | CheckpointError> =>
    Effect.suspend((): Effect.Effect<A, E | CheckpointError> => {
      const problem = runIdProblem(runId)
      return problem === undefined
        ? f()
        : Effect.fail(new CheckpointError({ operation, runId: String(runId), cause: invalid(`the run id ${problem}`) }))
    })
  const noRun = (operation: Operation, runId: string) =>
    new CheckpointError({ operation, runId, cause: `there is no run ${JSON.stringify(runId)} (open it first; it may have been forgotten)` })
  const existing = (operation: Operation, runId: string) => (found: boolean): Effect.Effect<void, CheckpointError> =>
    found ? Effect.void : Effect.fail(noRun(operation, runId))

  return {
    open: (runId, options) =>
      checked("open", runId, () =>
        Effect.gen(function*() {
          const fingerprint = options?.fingerprint
          const encoded = yield* attempt("open", runId, () => {
            if (typeof fingerprint !== "string") throw invalid(`fingerprint must be a string, got ${typeof fingerprint}`)
            if (options.total !== undefined && !isCount(options.total)) {
              throw invalid(`total must be an integer ≥ 0, got ${String(options.total)}`)
            }
            return { total: options.total ?? null, meta: options.meta === undefined ? null : toJson(options.meta, "meta") }
          })
          const now = yield* Clock.currentTimeMillis
          const stored = yield* call("open", runId, backend.open({ runId, fingerprint, ...encoded, now }))
          if (stored.fingerprint !== fingerprint) {
            return yield* new CheckpointMismatch({ runId, expected: stored.fingerprint, found: fingerprint })
          }
          return yield* attempt("open", runId, () => decodeRun(stored))
        })),

    record: (runId, outcomes) =>
      checked("record", runId, () =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const rows = yield* attempt("record", runId, () => {
            // One row per key, the last one winning, so that a backend can upsert the group in one statement.
            const byKey = new Map<string, StoredOutcome>()
            for (let i = 0; i < outcomes.length; i++) {
              const row = encodeOutcome(outcomes[i]!, i, now)
              byKey.delete(row.itemKey)
              byKey.set(row.itemKey, row)
            }
            return Array.from(byKey.values())
          })
          yield* call("record", runId, backend.record(runId, rows, now)).pipe(Effect.flatMap(existing("record", runId)))
        })),

    load: (runId) =>
      checked("load", runId, () =>
        Effect.gen(function*() {
          const rows = yield* call("load", runId, backend.load(runId))
          if (rows === undefined) return yield* noRun("load", runId)
          return yield* attempt("load", runId, () => {
            const outcomes = new Map<string, OutcomeRecord>()
            for (const row of rows) outcomes.set(row.itemKey, decodeOutcome(row))
            return outcomes
          })
        })),

    setState: (runId, state, reason) =>
      checked("setState", runId, () =>
        Effect.gen(function*() {
          yield* attempt("setState", runId, () => {
            if (!states.has(state)) throw invalid(`state must be running, stopped or finished, got ${String(state)}`)
            optionalString(reason, "reason")
          })
          const now = yield* Clock.currentTimeMillis
          yield* call("setState", runId, backend.setState(runId, state, reason ?? null, now)).pipe(
            Effect.flatMap(existing("setState", runId))
          )
        })),

    list: backend.list.pipe(
      Effect.mapError((cause) => new CheckpointError({ operation: "list", cause })),
      Effect.flatMap((runs) => attempt("list", undefined, () => runs.map(decodeRun)))
    ),

    get: (runId) =>
      checked("get", runId, () =>
        call("get", runId, backend.get(runId)).pipe(
          Effect.flatMap((stored) =>
            stored === undefined ? Effect.succeedNone : Effect.asSome(attempt("get", runId, () => decodeRun(stored)))
          )
        )),

    forget: (runId) => checked("forget", runId, () => call("forget", runId, backend.forget(runId))),

    saveShards: (runId, shards) =>
      checked("saveShards", runId, () =>
        Effect.gen(function*() {
          const rows = yield* attempt("saveShards", runId, () => {
            const byKey = new Map<string, StoredShard>()
            shards.forEach((shard, i) => {
              if (typeof shard?.key !== "string" || shard.key === "" || shard.key.length > 200) {
                throw invalid(`shard ${i}: key must be a string of 1 to 200 characters, got ${JSON.stringify(shard?.key)}`)
              }
              byKey.set(shard.key, { key: shard.key, state: toJson(shard.state, `shard ${JSON.stringify(shard.key)}`) })
            })
            return Array.from(byKey.values())
          })
          const now = yield* Clock.currentTimeMillis
          yield* call("saveShards", runId, backend.saveShards(runId, rows, now)).pipe(Effect.flatMap(existing("saveShards", runId)))
        })),

    loadShards: (runId) =>
      checked("loadShards", runId, () =>
        Effect.gen(function*() {
          const rows = yield* call("loadShards", runId, backend.loadShards(runId))
          if (rows === undefined) return yield* noRun("loadShards", runId)
          return yield* attempt("loadShards", runId, () => rows.map((row): ShardRecord => ({ key: row.key, state: JSON.parse(row.state) })))
        }))
  }
}

// ---------------------------------------------------------------------------
// memory
// ---------------------------------------------------------------------------

interface MemoryRun {
  run: Omit<StoredRun, "counts" | "cost">
  readonly outcomes: Map<string, StoredOutcome>
  readonly shards: Map<string, StoredShard>
}

const withProgress = ({ outcomes, run }: MemoryRun): StoredRun => {
  const counts = { succeeded: 0, failed: 0, skipped: 0 }
  let cost = 0
  for (const outcome of outcomes.values()) {
    counts[outcome.status]++
    cost += outcome.cost ?? 0
  }
  return { ...run, counts, cost }
}

/**
 * A backend in a `Map`, lost with the process. It keeps the JSON text, as
 * the SQL store does, so both behave alike.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Store> = Effect.sync(() => {
  const runs = new Map<string, MemoryRun>()
  return make({
    open: ({ fingerprint, meta, now, runId, total }) =>
      Effect.sync(() => {
        const existing = runs.get(runId)
        if (existing === undefined) {
          const run: MemoryRun = {
            run: { runId, fingerprint, state: "running", reason: null, total, meta, createdAt: now, updatedAt: now },
            outcomes: new Map(),
            shards: new Map()
          }
          runs.set(runId, run)
          return withProgress(run)
        }
        if (existing.run.fingerprint === fingerprint) {
          existing.run = {
            ...existing.run,
            state: "running",
            reason: null,
            updatedAt: now,
            total: total ?? existing.run.total,
            meta: meta ?? existing.run.meta
          }
        }
        return withProgress(existing)
      }),
    record: (runId, outcomes, now) =>
      Effect.sync(() => {
        const run = runs.get(runId)
        if (run === undefined) return false
        for (const outcome of outcomes) run.outcomes.set(outcome.itemKey, outcome)
        run.run = { ...run.run, updatedAt: now }
        return true
      }),
    load: (runId) => Effect.sync(() => {
      const run = runs.get(runId)
      return run === undefined ? undefined : Array.from(run.outcomes.values())
    }),
    setState: (runId, state, reason, now) =>
      Effect.sync(() => {
        const run = runs.get(runId)
        if (run === undefined) return false
        run.run = { ...run.run, state, reason, updatedAt: now }
        return true
      }),
    list: Effect.sync(() =>
      Array.from(runs.values(), withProgress).sort((a, b) => b.createdAt - a.createdAt || (a.runId < b.runId ? -1 : 1))
    ),
    get: (runId) => Effect.sync(() => {
      const run = runs.get(runId)
      return run === undefined ? undefined : withProgress(run)
    }),
    forget: (runId) => Effect.sync(() => runs.delete(runId)),
    saveShards: (runId, shards, now) =>
      Effect.sync(() => {
        const run = runs.get(runId)
        if (run === undefined) return false
        for (const shard of shards) run.shards.set(shard.key, shard)
        run.run = { ...run.run, updatedAt: now }
        return true
      }),
    loadShards: (runId) => Effect.sync(() => {
      const run = runs.get(runId)
      return run === undefined ? undefined : Array.from(run.shards.values())
    })
  })
})

/**
 * A store in memory: for tests and for runs that need not survive the
 * process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<CheckpointStore> = Layer.effect(CheckpointStore, makeMemory)
