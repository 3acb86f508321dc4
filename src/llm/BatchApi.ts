/**
 * Runs items through a provider's asynchronous batch API (`BatchProvider`:
 * `OpenAiBatch`, `AnthropicBatch`, or the simulator's of either) instead of live calls: about half
 * the price, for work that can wait hours. Each item gets one `TaskResult`,
 * as with `Batch.run`; `chat(config)` makes the options for chat requests,
 * so the values are the `ChatCompletion`s live calls give, priced at the
 * batch discount.
 *
 * The flow: items are packed into shards (`internal/batchShards`: one model
 * per shard, within the provider's line and byte limits and a token budget),
 * each line named `<run key>_<round>_<index>` so an answer maps back to its
 * item without a table. Each shard is uploaded, created, polled on a
 * `Schedule` (15 s growing ×1.5, capped at 5 min, jittered, by default)
 * until it ends, and its results are ingested at once, handed to
 * `onResult` as they come. Lines that failed for a reason that may pass
 * (expired, 429, 5xx, a batch cancelled by someone else, a line missing
 * from the results) go into the next round, up to `rounds`; permanent
 * errors are final. A batch refused for the model's enqueued-token limit is
 * created again once the wait passes (`queueTokens` keeps a model's shards
 * out under a budget instead); one refused for a line of its input fails
 * that item and sends the rest again. One shard at a time is between its
 * intent and its batch id.
 *
 * With `checkpoint: { runId }` and a `CheckpointStore`, the run is
 * crash-safe: each shard's state (planned → uploaded → submitting →
 * submitted → ingested) is saved before the call that moves it on, and
 * outcomes before the shard is marked ingested. Run again with the same id
 * (after a crash, or to attach to a run left going), it re-attaches to the
 * batches it had created, never creating one twice for a shard: a shard
 * caught between creating its batch and saving the id is looked up by the
 * batch's metadata (`effect_batch_run`, `effect_batch_shard`,
 * `effect_batch_token`), or where the provider keeps none (Anthropic) by
 * time and size. `cancel` cancels a run's batches at the provider;
 * the run, attached again, ingests what they had done and skips the rest.
 *
 * With a `Budget` in context, a shard's estimated cost (`estimate`, at the
 * batch price) is reserved before its batch is created and settled when it
 * is ingested; a shard the budget refuses is not created, its items come
 * out `Skipped` (`budget`) and are not recorded, so a checkpointed run
 * resumed with more room takes the shard up.
 *
 * With `fallback`, past a deadline the batches still out are cancelled and
 * the items they had not answered run live (`mode auto` in the CLI).
 *
 * What it does not promise: `items` are held in memory, and must be the
 * same list (same order) when a run is resumed; values must be JSON to be
 * checkpointed; the batch a crashed run had created but not recorded is
 * found only if the provider lists it (OpenAI and Anthropic do); the poll
 * waits are in-process sleeps, so a run keeps its process for as long as
 * its batches run.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { createHash, randomBytes } from "node:crypto"
import * as Budget from "../Budget.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as TaskError from "../TaskError.js"
import * as TaskResult from "../TaskResult.js"
import * as BatchProvider from "./BatchProvider.js"
import type { ChatInput } from "./ChatRequest.js"
import { customId, LineTooLarge, parseCustomId, Planner, type Shard } from "./internal/batchShards.js"
import * as OpenAiCompat from "./OpenAiCompat.js"

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

/**
 * What a run sends and how it reads the answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spec<A, B> {
  /** Where every line goes, e.g. `"/v1/chat/completions"`. */
  readonly endpoint: string
  /** The model and request body of an item. */
  readonly toRequest: (item: A, index: number) => { readonly model: string, readonly body: unknown }
  /** An answer's body as the item's value. */
  readonly decode: (body: unknown, item: A, index: number) => Effect.Effect<B, TaskError.TaskError>
  /** Estimated tokens an item queues (packing against `shard.maxTokens`). Default: a quarter of its body's length. */
  readonly tokens?: ((item: A, index: number) => number) | undefined
  /** What a value cost in the batch, and what the same answer costs live, in USD. */
  readonly cost?: ((value: B) => { readonly batch: number, readonly live: number }) | undefined
  /** The most an item may cost in the batch, in USD (reserved on the `Budget`, per shard, before its batch is created). */
  readonly estimate?: ((item: A, index: number) => number) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<A, B, E = never, R = never> extends Spec<A, B> {
  /** Limits of one shard. Default: 95 % of the provider's lines and bytes; tokens unlimited. */
  readonly shard?: { readonly maxRequests?: number, readonly maxBytes?: number, readonly maxTokens?: number } | undefined
  /** When to read a running batch again. Default: 15 s, growing ×1.5 to 5 min, jittered. */
  readonly poll?: Schedule.Schedule<unknown> | undefined
  /** Rounds an item may take (the first included), ≥ 1. Default 3. */
  readonly rounds?: number | undefined
  /**
   * Estimated tokens (`tokens`) that may be queued at the provider per
   * model: a shard waits to be created until those of the shards out ended
   * leave room (OpenAI's enqueued-token limit). Default: unlimited, the
   * provider's refusals waited out instead.
   */
  readonly queueTokens?: number | undefined
  /** How long a shard refused for the model's enqueued-token limit waits before it is created again. Default 1 minute. */
  readonly limitWait?: Duration.DurationInput | undefined
  /**
   * Items settled elsewhere (e.g. lines a job refused on arrival): never
   * sent, and without a result here. The rest keep their positions (line
   * names and the checkpoint's fingerprint are of the whole list).
   */
  readonly exclude?: ReadonlySet<number> | undefined
  /** Shards at the provider at once. Default 16. */
  readonly maxShards?: number | undefined
  /**
   * Record the run under this id, in the `CheckpointStore` in context, so it
   * can be resumed or attached to; `meta` (JSON) is kept with it (e.g. what
   * it takes to run it again).
   */
  readonly checkpoint?: { readonly runId: string, readonly meta?: unknown } | undefined
  /**
   * A deadline, `after` the run's start (a resumed run keeps its first
   * start), past which batches are not waited for: their batches are
   * cancelled, what they had answered is kept, and the items left run
   * `live` (e.g. through `Batch.run`), whose results are recorded as any.
   */
  readonly fallback?: {
    readonly after: Duration.DurationInput
    readonly live: (indices: ReadonlyArray<number>) => Effect.Effect<ReadonlyArray<TaskResult.TaskResult<B, TaskError.TaskError>>, E, R>
    /** What a value answered live cost, in USD (counted in the report's `cost` and `liveCost`). */
    readonly cost?: ((value: B) => number) | undefined
  } | undefined
  /**
   * Called with each result as its shard is ingested, after it is recorded
   * (results of a resumed run's earlier work come first); its failure ends
   * the run.
   */
  readonly onResult?: ((result: TaskResult.TaskResult<B, TaskError.TaskError>) => Effect.Effect<void, E>) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly items: number
  readonly succeeded: number
  readonly failed: number
  readonly skipped: number
  /** Shards this run planned or took up again. */
  readonly shards: number
  /** Batches this run created (not those it re-attached to). */
  readonly batchesCreated: number
  /** Batches of an earlier run this one re-attached to, found by id or by metadata. */
  readonly batchesAttached: number
  /** The most rounds any item took. */
  readonly rounds: number
  /** Items run live past the fallback's deadline. */
  readonly live: number
  /** USD, at batch prices, of the values this run got (not those loaded from a checkpoint). */
  readonly cost: number
  /** What the same answers cost live. */
  readonly liveCost: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Outcome<B> {
  /** `results[i]` is item `i`'s (none for an excluded item). */
  readonly results: ReadonlyArray<TaskResult.TaskResult<B, TaskError.TaskError>>
  readonly report: Report
}

// ---------------------------------------------------------------------------
// shard records
// ---------------------------------------------------------------------------

type ShardState = "planned" | "uploaded" | "submitting" | "submitted" | "ingested"

/** A shard as saved in the checkpoint store (JSON). */
interface ShardRecord {
  readonly key: string
  readonly round: number
  readonly model: string
  readonly indices: ReadonlyArray<number>
  readonly state: ShardState
  /** Tags the batch with a value no other shard of any run has. */
  readonly token: string
  readonly file?: string | undefined
  readonly batch?: string | undefined
  /** Epoch ms when the batch was about to be created. */
  readonly intentAt?: number | undefined
  /** Set by `cancel`: lines cancelled are skipped, not sent again. */
  readonly cancelled?: boolean | undefined
  /** Once ingested: items to send in the next round, with why. */
  readonly again?: ReadonlyArray<readonly [number, string]> | undefined
  /** Once ingested: items to send again in the same round (their batch was refused for another line). */
  readonly replan?: ReadonlyArray<number> | undefined
}

const isShardRecord = (value: unknown): value is ShardRecord =>
  typeof value === "object" && value !== null && typeof (value as ShardRecord).key === "string" &&
  Array.isArray((value as ShardRecord).indices) && typeof (value as ShardRecord).state === "string"

const tagsOf = (runKey: string, shard: ShardRecord): BatchProvider.Tags => ({
  effect_batch_run: runKey,
  effect_batch_shard: shard.key,
  effect_batch_token: shard.token
})

// ---------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------

const defaultPoll: Schedule.Schedule<unknown> = Schedule.exponential("15 seconds", 1.5).pipe(
  Schedule.either(Schedule.spaced("5 minutes")),
  Schedule.jittered
)

const invalid = (what: string): never => {
  throw new TypeError(`BatchApi: ${what}`)
}

/** A final failure of item `index`, for good (`Permanent`) or after its last round (`Transient`). */
const failure = (index: number, tag: "Permanent" | "Transient", message: string, attempts: number, status?: number) =>
  TaskResult.failed<TaskError.TaskError>(
    index,
    tag === "Permanent"
      ? new TaskError.Permanent({ message, ...(status === undefined ? {} : { status }) })
      : new TaskError.Transient({ message }),
    tag,
    attempts,
    0
  )

const hash = (text: string) => createHash("sha256").update(text).digest("hex")

/**
 * Runs `items` through the `BatchProvider` in context. Fails only when the
 * provider or the checkpoint store does (a checkpointed run can then be run
 * again to go on); every item's own failure is in its result.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <A, B, E = never, R = never>(
  items: ReadonlyArray<A>,
  options: Options<A, B, E, R>
): Effect.Effect<
  Outcome<B>,
  BatchProvider.BatchApiError | CheckpointStore.CheckpointError | CheckpointStore.CheckpointMismatch | E,
  BatchProvider.BatchProvider | R
> =>
  Effect.gen(function*() {
    const rounds = options.rounds ?? 3
    if (!(Number.isInteger(rounds) && rounds >= 1)) invalid(`rounds must be an integer ≥ 1, got ${rounds}`)
    const maxShards = options.maxShards ?? 16
    if (!(Number.isInteger(maxShards) && maxShards >= 1)) invalid(`maxShards must be an integer ≥ 1, got ${maxShards}`)
    const provider = yield* BatchProvider.BatchProvider
    const { endpoint } = options
    const poll = options.poll ?? defaultPoll
    const excluded = options.exclude ?? new Set<number>()
    const limitWait = options.limitWait ?? "1 minute"

    const requests = items.map((item, index) => options.toRequest(item, index))
    const tokensOf = (index: number) =>
      options.tokens?.(items[index]!, index) ?? Math.ceil(JSON.stringify(requests[index]!.body).length / 4)

    // --- the record, if any -----------------------------------------------------

    const runId = options.checkpoint?.runId
    /** Where a checkpointed run keeps its outcomes and shards. */
    const journal = runId === undefined ? undefined : {
      runId,
      store: Option.getOrElse(
        yield* Effect.serviceOption(CheckpointStore.CheckpointStore),
        () => invalid("checkpoint needs a CheckpointStore in context (e.g. CheckpointStore.layerMemory)")
      ),
      // Hashed only for a checkpointed run: the fingerprint and each outcome's key.
      itemKeys: requests.map((request, index) => CheckpointStore.itemKeyOf(index, { model: request.model, body: request.body }))
    }
    const runKey = runId === undefined ? randomBytes(6).toString("hex") : hash(`effect-batch/batch-api/${runId}`).slice(0, 12)

    const results: Array<TaskResult.TaskResult<B, TaskError.TaskError> | undefined> = new Array(items.length)
    let startedAt = yield* Clock.currentTimeMillis
    const shards = new Map<string, ShardRecord>()
    const emit: (result: TaskResult.TaskResult<B, TaskError.TaskError>) => Effect.Effect<void, E> = options.onResult ?? (() => Effect.void)

    if (journal !== undefined) {
      const { itemKeys, runId, store } = journal
      const fingerprint = CheckpointStore.fingerprintOf(["batch-api", endpoint, ...itemKeys.slice(0, 100)])
      const meta = { mode: "batch", endpoint, ...(options.checkpoint?.meta === undefined ? {} : { run: options.checkpoint.meta }) }
      startedAt = (yield* store.open(runId, { fingerprint, total: items.length, meta })).createdAt
      const recorded = yield* store.load(runId)
      for (const outcome of recorded.values()) {
        if (outcome.index >= items.length || itemKeys[outcome.index] !== outcome.itemKey) {
          return yield* new CheckpointStore.CheckpointMismatch({
            runId,
            expected: outcome.itemKey,
            found: itemKeys[outcome.index] ?? `no item ${outcome.index}`
          })
        }
        const result = fromRecord<B>(outcome)
        results[outcome.index] = result
        yield* emit(result)
      }
      for (const { state } of yield* store.loadShards(runId)) if (isShardRecord(state)) shards.set(state.key, state)
    }

    const save = (shard: ShardRecord) =>
      Effect.suspend(() => {
        shards.set(shard.key, shard)
        return journal === undefined ? Effect.void : journal.store.saveShards(journal.runId, [{ key: shard.key, state: shard }])
      })

    const storedShard = (key: string) =>
      journal === undefined
        ? Effect.succeed(undefined)
        : Effect.map(journal.store.loadShards(journal.runId), (all) =>
            all.map((stored) => stored.state).find((state): state is ShardRecord => isShardRecord(state) && state.key === key))

    const record = (settled: ReadonlyArray<TaskResult.TaskResult<B, TaskError.TaskError>>) =>
      Effect.gen(function*() {
        for (const result of settled) results[result.index] = result
        if (journal !== undefined && settled.length > 0) {
          const outcomes = settled.map((result) => toRecord(result, journal.itemKeys[result.index]!, options.cost))
          yield* journal.store.record(journal.runId, outcomes)
        }
        for (const result of settled) yield* emit(result)
      })

    // --- counters ---------------------------------------------------------------

    let created = 0
    let attached = 0
    let touched = 0
    let cost = 0
    let liveCost = 0
    let mostRounds = 0
    let liveItems = 0
    /** Shards the budget refused in this run: not taken up again until the run is. */
    const refused = new Set<string>()
    const budget = Option.getOrUndefined(yield* Effect.serviceOption(Budget.Budget))

    // --- one shard, from wherever it stands to ingested -------------------------

    const lineOf = (round: number, index: number) => provider.line(customId(runKey, round, index), endpoint, requests[index]!.body)
    const linesOf = (shard: ShardRecord) => shard.indices.map((index) => lineOf(shard.round, index))

    // One shard at a time between its intent and its batch id: after a crash at most one shard is caught there, so a
    // batch found in its window that no other shard claims is its own, even where the provider keeps no metadata.
    const submitting = yield* Effect.makeSemaphore(1)

    const create = (shard: ShardRecord) =>
      Effect.gen(function*() {
        const intent: ShardRecord = { ...shard, state: "submitting", intentAt: yield* Clock.currentTimeMillis }
        yield* save(intent)
        const batch = yield* provider.create(shard.file!, endpoint, tagsOf(runKey, shard))
        created++
        const submitted: ShardRecord = { ...intent, state: "submitted", batch }
        yield* save(submitted)
        return submitted
      })

    /** Created, or not, before the id was saved: the provider knows. */
    /** The batch a shard caught between intent and id had created, if any: by its tags, or its window and size. */
    const findBatch = (shard: ShardRecord) => {
      const intentAt = shard.intentAt ?? 0
      const claimed = new Set<string>()
      for (const other of shards.values()) if (other.batch !== undefined && other.key !== shard.key) claimed.add(other.batch)
      return provider.find({
        tags: tagsOf(runKey, shard),
        since: intentAt - 60_000,
        until: intentAt + 120_000,
        requests: shard.indices.length,
        exclude: claimed
      })
    }

    const findOrCreate = (shard: ShardRecord) =>
      Effect.gen(function*() {
        const found = yield* findBatch(shard)
        if (Option.isNone(found)) return yield* create(shard)
        attached++
        const submitted: ShardRecord = { ...shard, state: "submitted", batch: found.value }
        yield* save(submitted)
        return submitted
      })

    const waitForEnd = (batch: string) =>
      Effect.gen(function*() {
        const driver = yield* Schedule.driver(poll)
        while (true) {
          const status = yield* provider.poll(batch)
          if (status.ended !== undefined) return status
          yield* Effect.orDieWith(driver.next(status), () => new Error("BatchApi: the poll schedule ended before the batch"))
        }
      })

    /** Results of an ended batch: what settles now, what goes to the next round, what goes again in this one. */
    /** With `forLive`, lines not answered for good are left for the live fallback, not skipped nor sent again. */
    const ingest = (shard: ShardRecord, status: BatchProvider.Status, forLive = false) =>
      Effect.gen(function*() {
        const members = new Set(shard.indices)
        const attempts = shard.round + 1
        const settled: Array<TaskResult.TaskResult<B, TaskError.TaskError>> = []
        const again = new Map<number, string>()
        const replan: Array<number> = []
        if (status.ended === "failed") {
          const refusal = status.failures[0] ?? { code: "unknown", message: "the batch failed without saying why" }
          const line = refusal.line
          if (line !== undefined && line >= 1 && line <= shard.indices.length) {
            const index = shard.indices[line - 1]!
            settled.push(failure(index, "Permanent", `the batch refused this line: ${refusal.code}: ${refusal.message}`, attempts))
            for (const other of shard.indices) if (other !== index) replan.push(other)
          } else {
            // Not a line's fault, nor the queue's (handled before): a batch no resending would fix.
            for (const index of shard.indices) {
              settled.push(failure(index, "Permanent", `the batch failed: ${refusal.code}: ${refusal.message}`, attempts))
            }
          }
        } else {
          // `cancel` may have run in another process since this shard was read: its mark is in the store.
          const cancelledByUs = shard.cancelled === true || (status.ended === "cancelled" && (yield* storedShard(shard.key))?.cancelled === true)
          const seen = new Set<number>()
          for (const line of yield* provider.results(status)) {
            if (line._tag === "Malformed") {
              yield* Effect.logWarning(`batch ${status.id}: a results line is malformed (${line.message}); its item goes again`)
              continue
            }
            const named = parseCustomId(line.customId, runKey)
            if (named === undefined || named.round !== shard.round || !members.has(named.index) || seen.has(named.index)) continue
            const index = named.index
            seen.add(index)
            switch (line._tag) {
              case "Answered": {
                const decoded = yield* Effect.either(options.decode(line.body, items[index]!, index))
                if (decoded._tag === "Right") {
                  const priced = options.cost?.(decoded.right)
                  cost += priced?.batch ?? 0
                  liveCost += priced?.live ?? 0
                  settled.push(TaskResult.succeeded(index, decoded.right, attempts, 0, "batch"))
                } else {
                  settled.push(TaskResult.failed(index, decoded.left, decoded.left._tag, attempts, 0))
                }
                break
              }
              case "Permanent":
                settled.push(failure(index, "Permanent", line.message, attempts, line.status))
                break
              case "Cancelled":
                if (forLive) again.set(index, "left for live calls")
                else if (cancelledByUs) settled.push(TaskResult.skipped(index, "interrupted", attempts))
                else again.set(index, "the batch was cancelled (not by this run)")
                break
              case "Again":
                again.set(index, line.reason)
            }
          }
          for (const index of shard.indices) if (!seen.has(index)) again.set(index, `no result line for it when the batch was ${status.ended}`)
        }
        if (forLive) {
          again.clear()
          replan.length = 0
        }
        mostRounds = Math.max(mostRounds, attempts)
        // A run killed between recording these outcomes and marking the shard ingested has them from the checkpoint.
        yield* record(settled.filter((result) => results[result.index] === undefined))
        const unsettled = (index: number) => results[index] === undefined
        yield* save({
          ...shard,
          state: "ingested",
          again: Array.from(again).filter(([index]) => unsettled(index)),
          replan: replan.filter(unsettled)
        })
      })

    const queues = new Map<string, Effect.Semaphore>()
    const queueTokens = options.queueTokens
    if (queueTokens !== undefined && !(queueTokens >= 1)) invalid(`queueTokens must be ≥ 1, got ${queueTokens}`)
    /** Takes the shard's tokens from its model's queue budget until the scope closes (a shard larger than it alone takes it all). */
    const queueSlot = (shard: ShardRecord) =>
      Effect.gen(function*() {
        if (queueTokens === undefined) return
        let queue = queues.get(shard.model)
        if (queue === undefined) queues.set(shard.model, queue = yield* Effect.makeSemaphore(queueTokens))
        let tokens = 0
        for (const index of shard.indices) tokens += tokensOf(index)
        const permits = Math.min(queueTokens, Math.max(1, Math.ceil(tokens)))
        yield* Effect.acquireRelease(queue.take(permits), () => queue.release(permits))
      })

    /** The estimated cost of a shard, reserved on the budget until it is ingested; `undefined` if the budget refused it. */
    const reserve = (shard: ShardRecord): number | undefined => {
      if (budget === undefined) return 0
      let usd = 0
      for (const index of shard.indices) usd += options.estimate?.(items[index]!, index) ?? 0
      return budget.unsafeReserve(usd) ? usd : undefined
    }

    /** An event on the shard's span (see `advance`), at the clock's time. */
    const mark = (name: string, attributes?: Record<string, unknown>) =>
      Effect.flatMap(Effect.currentSpan, (span) => Effect.map(Clock.currentTimeNanos, (at) => span.event(name, at, attributes))).pipe(
        Effect.ignore
      )

    const advance = (initial: ShardRecord): Effect.Effect<void, BatchProvider.BatchApiError | CheckpointStore.CheckpointError | E> =>
      Effect.gen(function*() {
        touched++
        // A shard not yet created is paid for only if the budget takes its estimate; one created is paid for anyway.
        const atProvider = initial.state === "submitting" || initial.state === "submitted"
        const reserved = atProvider ? 0 : reserve(initial)
        if (reserved === undefined) {
          // Left as it stands (a resumed run with room takes it up); its items are skipped for now, and not recorded.
          refused.add(initial.key)
          const skipped = initial.indices.map((index) => TaskResult.skipped(index, "budget", initial.round))
          for (const result of skipped) results[result.index] = result
          for (const result of skipped) yield* emit(result)
          yield* Effect.annotateCurrentSpan("effect-batch.skip_reason", "budget")
          return
        }
        // Its place in the model's queue, from before its batch is created until it is ingested.
        yield* queueSlot(initial)
        const costBefore = cost
        // Held in memory only: uploaded by a process that is gone, the lines are to be uploaded again.
        let shard = initial.state === "uploaded" && provider.inline ? { ...initial, state: "planned" as const } : initial
        yield* Effect.addFinalizer(() => Effect.sync(() => budget?.unsafeSettle(reserved, cost - costBefore)))
        while (shard.state !== "ingested") {
          switch (shard.state) {
            case "planned": {
              const file = yield* provider.upload(`${runKey}-${shard.key.replace("/", "-")}.jsonl`, linesOf(shard))
              shard = { ...shard, state: "uploaded", file }
              yield* save(shard)
              yield* mark("uploaded", { "effect-batch.file": file })
              break
            }
            case "uploaded":
              shard = yield* submitting.withPermits(1)(create(shard))
              if (shard.state === "submitted") yield* mark("submitted", { "effect-batch.batch": shard.batch })
              break
            case "submitting":
              shard = yield* submitting.withPermits(1)(findOrCreate(shard))
              if (shard.state === "submitted") yield* mark("submitted", { "effect-batch.batch": shard.batch })
              break
            case "submitted": {
              if (initial.state === "submitted" && shard === initial) attached++
              const status = yield* waitForEnd(shard.batch!)
              yield* mark("ended", { "effect-batch.batch": shard.batch, "effect-batch.batch_status": status.ended })
              const limit = status.ended === "failed" ? status.failures.find((f) => f.code === "token_limit_exceeded") : undefined
              if (limit !== undefined) {
                // Refused for the model's queue, not for its lines: the same file goes again once the wait passes.
                yield* Effect.logWarning(`shard ${shard.key}: ${limit.message}; it is created again after a wait`)
                yield* mark("token_limit_wait", { "effect-batch.batch": shard.batch })
                yield* Effect.sleep(limitWait)
                shard = { ...shard, state: "uploaded", batch: undefined, intentAt: undefined }
                yield* save(shard)
                break
              }
              yield* ingest(shard, status)
              shard = shards.get(shard.key)!
              yield* mark("ingested", { "effect-batch.again": shard.again?.length ?? 0 })
              break
            }
          }
        }
      }).pipe(
        Effect.scoped,
        // A span per shard, from where this run took it up to its ingest: a provider's batch can take hours, and
        // its events say where it stood (uploaded, submitted with its batch id, ended, ingested).
        Effect.withSpan("effect-batch.shard", {
          attributes: {
            "effect-batch.shard": initial.key,
            "effect-batch.model": initial.model,
            "effect-batch.round": initial.round,
            "effect-batch.lines": initial.indices.length,
            "effect-batch.resumed_from": initial.state
          },
          captureStackTrace: false
        })
      )

    // --- waves: plan what is pending, take every open shard to ingested --------

    const shardLimits = {
      maxRequests: Math.max(1, options.shard?.maxRequests ?? Math.floor(provider.limits.maxRequests * 0.95)),
      maxBytes: Math.max(1, options.shard?.maxBytes ?? Math.floor(provider.limits.maxBytes * 0.95)),
      maxTokens: options.shard?.maxTokens
    }

    const waves = Effect.gen(function*() {
      while (true) {
      // Where each unsettled item stands: in an open shard, or due in some round.
        const open: Array<ShardRecord> = []
        const inOpen = new Set<number>()
        const due = new Map<number, number>()
        const lastReason = new Map<number, string>()
        const perRound = new Map<number, number>()
        for (const shard of shards.values()) {
          perRound.set(shard.round, (perRound.get(shard.round) ?? 0) + 1)
          if (shard.state !== "ingested") {
            open.push(shard)
            for (const index of shard.indices) inOpen.add(index)
            continue
          }
          for (const [index, reason] of shard.again ?? []) {
            if ((due.get(index) ?? 0) <= shard.round + 1) {
              due.set(index, shard.round + 1)
              lastReason.set(index, reason)
            }
          }
          for (const index of shard.replan ?? []) if ((due.get(index) ?? 0) <= shard.round) due.set(index, shard.round)
        }
        const exhausted: Array<TaskResult.TaskResult<B, TaskError.TaskError>> = []
        const planned: Array<{ readonly round: number, readonly shard: Shard }> = []
        const byRound = new Map<number, Planner>()
        for (let index = 0; index < items.length; index++) {
          if (results[index] !== undefined || inOpen.has(index) || excluded.has(index)) continue
          const round = due.get(index) ?? 0
          if (round >= rounds) {
            const reason = lastReason.get(index) ?? "a retryable failure"
            exhausted.push(failure(index, "Transient", `still failing after ${rounds} rounds: ${reason}`, rounds))
            continue
          }
          let roundPlanner = byRound.get(round)
          if (roundPlanner === undefined) byRound.set(round, roundPlanner = new Planner(shardLimits))
          // The line's own bytes and its newline: what the shard's file will hold.
          const bytes = Buffer.byteLength(lineOf(round, index)) + 1
          try {
            const closed = roundPlanner.add({ index, model: requests[index]!.model, bytes, tokens: tokensOf(index) })
            if (closed !== undefined) planned.push({ round, shard: closed })
          } catch (error) {
            if (!(error instanceof LineTooLarge)) throw error
            exhausted.push(failure(index, "Permanent", `too large for a batch: ${error.reason}`, 0))
          }
        }
        for (const [round, roundPlanner] of byRound) for (const shard of roundPlanner.finish()) planned.push({ round, shard })
        yield* record(exhausted)
        const fresh: Array<ShardRecord> = planned.map(({ round, shard }) => {
          const n = perRound.get(round) ?? 0
          perRound.set(round, n + 1)
          const token = randomBytes(6).toString("hex")
          return { key: `${round}/${n}`, round, model: shard.model, indices: shard.indices, state: "planned", token }
        })
        if (fresh.length > 0) {
          for (const shard of fresh) shards.set(shard.key, shard)
          if (journal !== undefined) {
            yield* journal.store.saveShards(journal.runId, fresh.map((shard) => ({ key: shard.key, state: shard })))
          }
        }
        const toRun = [...open.filter((shard) => !refused.has(shard.key)), ...fresh]
        if (toRun.length === 0) break
        yield* Effect.forEach(toRun, advance, { concurrency: maxShards, discard: true })
      }
    })

    if (options.fallback === undefined) {
      yield* waves
    } else {
      const remaining = startedAt + Duration.toMillis(Duration.decode(options.fallback.after)) - (yield* Clock.currentTimeMillis)
      const finished = remaining > 0 && Option.isSome(yield* Effect.timeoutOption(waves, Duration.millis(remaining)))
      if (!finished) {
        // Past the deadline: batches still out are cancelled, and what they had answered is kept.
        yield* Effect.forEach(Array.from(shards.values()).filter((shard) => shard.state !== "ingested"), (shard) =>
          Effect.gen(function*() {
            const batch = shard.batch ?? (shard.state === "submitting" ? Option.getOrUndefined(yield* findBatch(shard)) : undefined)
            if (batch === undefined) return yield* save({ ...shard, state: "ingested", again: [], replan: [] })
            if (shard.batch === undefined) attached++
            yield* provider.cancel(batch)
            yield* ingest({ ...shard, batch }, yield* waitForEnd(batch), true)
          }), { concurrency: maxShards, discard: true })
        const left: Array<number> = []
        // Not flatMap: `results` has holes where nothing settled, and array methods skip holes.
        for (let index = 0; index < items.length; index++) if (results[index] === undefined && !excluded.has(index)) left.push(index)
        if (left.length > 0) {
          yield* Effect.logDebug(`${left.length} items not answered by batches before the deadline run live`)
          const live = yield* options.fallback.live(left)
          const fresh = live.filter((result) => results[result.index] === undefined)
          for (const result of fresh) {
            if (result._tag !== "Succeeded") continue
            const paid = options.fallback.cost?.(result.value) ?? 0
            cost += paid
            liveCost += paid
          }
          yield* record(fresh)
          liveItems += fresh.length
        }
      }
    }

    const final = results as ReadonlyArray<TaskResult.TaskResult<B, TaskError.TaskError>>
    if (journal !== undefined) yield* journal.store.setState(journal.runId, "finished")
    const count = (tag: TaskResult.TaskResult<B, TaskError.TaskError>["_tag"]) => final.filter((r) => r._tag === tag).length
    return {
      results: final,
      report: {
        items: items.length,
        succeeded: count("Succeeded"),
        failed: count("Failed"),
        skipped: count("Skipped"),
        shards: touched,
        batchesCreated: created,
        batchesAttached: attached,
        rounds: mostRounds,
        live: liveItems,
        cost,
        liveCost
      }
    }
  })

// ---------------------------------------------------------------------------
// cancel
// ---------------------------------------------------------------------------

/**
 * Cancels, at the provider, every batch of the checkpointed run `runId` that
 * has not been ingested, and marks its shard so that the lines it never ran
 * are skipped (not sent again) when the run is attached to again. How many
 * batches it cancelled.
 *
 * @since 0.1.0
 * @category running
 */
export const cancel = (
  runId: string
): Effect.Effect<
  number,
  BatchProvider.BatchApiError | CheckpointStore.CheckpointError,
  BatchProvider.BatchProvider | CheckpointStore.CheckpointStore
> =>
  Effect.gen(function*() {
    const provider = yield* BatchProvider.BatchProvider
    const store = yield* CheckpointStore.CheckpointStore
    let cancelled = 0
    for (const { state } of yield* store.loadShards(runId)) {
      if (!isShardRecord(state) || state.state === "ingested") continue
      yield* store.saveShards(runId, [{ key: state.key, state: { ...state, cancelled: true } }])
      if (state.batch !== undefined) {
        yield* provider.cancel(state.batch)
        cancelled++
      }
    }
    return cancelled
  })

/**
 * A shard of a checkpointed run, as `shards` reports it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShardView {
  /** `<round>/<n>`. */
  readonly key: string
  readonly round: number
  readonly model: string
  readonly lines: number
  readonly state: ShardState
  /** The provider's batch, once created. */
  readonly batch: string | undefined
  readonly cancelled: boolean
  /** Once ingested: lines that go into the next round. */
  readonly again: number
}

/**
 * @since 0.1.0
 * @category models
 */
export type { ShardState }

/**
 * The shards of the checkpointed run `runId`, by round then number.
 *
 * @since 0.1.0
 * @category running
 */
export const shards = (
  runId: string
): Effect.Effect<ReadonlyArray<ShardView>, CheckpointStore.CheckpointError, CheckpointStore.CheckpointStore> =>
  Effect.map(Effect.flatMap(CheckpointStore.CheckpointStore, (store) => store.loadShards(runId)), (stored) =>
    stored.flatMap(({ state }) =>
      isShardRecord(state)
        ? [{
            key: state.key,
            round: state.round,
            model: state.model,
            lines: state.indices.length,
            state: state.state,
            batch: state.batch,
            cancelled: state.cancelled === true,
            again: state.again?.length ?? 0
          }]
        : []
    ).sort((a, b) => a.round - b.round || Number(a.key.split("/")[1]) - Number(b.key.split("/")[1])))

// ---------------------------------------------------------------------------
// records
// ---------------------------------------------------------------------------

const toRecord = <B>(
  result: TaskResult.TaskResult<B, TaskError.TaskError>,
  itemKey: string,
  costOf: Spec<unknown, B>["cost"]
): CheckpointStore.OutcomeRecord => {
  const base = { itemKey, index: result.index, attempts: result.attempts }
  switch (result._tag) {
    case "Succeeded":
      return { ...base, status: "succeeded", value: result.value, durationMs: result.durationMs, cost: costOf?.(result.value).batch ?? 0 }
    case "Failed": {
      const error = result.error
      return {
        ...base,
        status: "failed",
        durationMs: result.durationMs,
        errorClass: result.errorClass,
        error: {
          tag: error._tag,
          message: error.message,
          ...("status" in error && typeof error.status === "number" ? { status: error.status } : {})
        }
      }
    }
    case "Skipped":
      return { ...base, status: "skipped", durationMs: 0, reason: result.reason }
  }
}

const fromRecord = <B>(outcome: CheckpointStore.OutcomeRecord): TaskResult.TaskResult<B, TaskError.TaskError> => {
  switch (outcome.status) {
    case "succeeded":
      return TaskResult.succeeded(outcome.index, outcome.value as B, outcome.attempts, outcome.durationMs, "checkpoint")
    case "failed": {
      const message = outcome.error?.message ?? "failed"
      const error = outcome.errorClass === "Permanent"
        ? new TaskError.Permanent({ message, ...(outcome.error?.status === undefined ? {} : { status: outcome.error.status }) })
        : new TaskError.Transient({ message })
      return TaskResult.failed(outcome.index, error, error._tag, outcome.attempts, outcome.durationMs)
    }
    case "skipped":
      return TaskResult.skipped(outcome.index, "interrupted", outcome.attempts)
  }
}

// ---------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface ChatConfig extends OpenAiCompat.Config {
  /** The batch price as a share of the live one. Default: the prices' `batchDiscount`, else 0.5 (OpenAI's and Anthropic's). */
  readonly discount?: number | undefined
}

/**
 * The options for chat requests: the same bodies `OpenAiCompat.chat(config)`
 * sends live, decoded into the same `ChatCompletion`s, with `cost` at the
 * batch discount.
 *
 * @since 0.1.0
 * @category constructors
 */
export const chat = (config: ChatConfig): Spec<ChatInput, OpenAiCompat.ChatCompletion> => {
  const discount = config.discount ?? (config.prices ?? Budget.defaultPrices[config.model])?.batchDiscount ?? 0.5
  if (!(discount > 0 && discount <= 1)) invalid(`discount must be in (0, 1], got ${discount}`)
  const live = OpenAiCompat.chat(config)
  const estimate = live.options.estimate!
  return {
    endpoint: "/v1/chat/completions",
    toRequest: (input) => {
      const body = live.body(input)
      return { model: typeof body["model"] === "string" ? body["model"] : config.model, body }
    },
    decode: (body) => Effect.map(live.decode(body), (completion) => ({ ...completion, cost: completion.cost * discount })),
    tokens: (input, index) => estimate(input, index).tokens ?? 0,
    estimate: (input, index) => (estimate(input, index).usd ?? 0) * discount,
    cost: (completion) => ({ batch: completion.cost, live: completion.cost / discount })
  }
}
