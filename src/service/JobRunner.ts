/**
 * Runs jobs, in two parts that a service process takes one or both of
 * (`JobService` roles):
 *
 * - the control (`JobRunner`, `layerControl`), what the API calls:
 *   `execute` starts (or finds) a job's durable execution on the workflow
 *   engine, wherever the cluster runs it; `cancel` sends a `JobSignals`
 *   notice to every process; `progressOf` is each job's last published
 *   progress (as `JobEvents` saw it, else from the store); `resumeUnfinished` starts again every job left
 *   queued or running.
 * - the worker (`layerWorker`): what the steps of the durable workflow
 *   (`JobWorkflow`) do. Each job (and each replay of its dead letters) is
 *   one execution of `JobWorkflow.BatchJob`, whose items go through `Batch`
 *   in chunks of `JobWorkflow.chunkSize` (the size its execution was started with).
 *
 * The worker:
 * - A chunk re-executed after a crash asks the `JobStore` for the items still
 *   pending, so what was recorded is not run again; outcomes are recorded as
 *   they settle, every job's in one transaction per turn of the event loop
 *   (`OutcomeWriter`), and a chunk ends once its outcomes are stored. Items
 *   in flight at a crash, and items settled but not yet committed (the write
 *   being gathered), are called again, with the same idempotency key (job
 *   id + index) sent to the provider. A batch-mode job's outcomes go through
 *   the same writer; one lost in a crash is handed over again from the
 *   batch run's checkpoint when the run is attached again.
 * - Shared limits: a chunk runs under its provider profile's limiters, at the
 *   job's priority (`ConcurrencyLimiter.withPriority`).
 * - Time limits: soft (stop admitting, in-flight items finish, the rest are
 *   `skipped`) through `Batch`'s `stopWhen`; hard (in-flight items
 *   interrupted) by racing the chunk; both measured from the job's start, so
 *   a restart does not reset them. Per item: `itemTimeout`, `itemDeadline`.
 * - Cancel: a cancel notice interrupts the job's chunks running in this
 *   process at once (aborting their requests); so does finding the job
 *   cancelled in the store on the progress tick (a notice lost between
 *   processes), and a chunk that starts later finds it cancelled and does
 *   nothing. (The engine's own `interrupt` only acts when a workflow
 *   suspends, and activities are uninterruptible, hence this signal.)
 * - Progress: every `progressEvery`, the jobs running here publish their
 *   counts, rate and ETA when they moved, and their provider's limit when it
 *   changed.
 *
 * What it does not promise: exactly-once calls (at-least-once for items in
 * flight at a crash); a job's rate is measured by the runner running it,
 * and starts again from nothing when the job moves to another runner.
 *
 * @since 0.1.0
 */
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as HttpClient from "@effect/platform/HttpClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as FiberId from "effect/FiberId"
import type * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as Batch from "../Batch.js"
import * as BatchMetrics from "../BatchMetrics.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as BatchApi from "../llm/BatchApi.js"
import * as BatchProvider from "../llm/BatchProvider.js"
import * as OpenAiBatch from "../llm/OpenAiBatch.js"
import * as Budget from "../Budget.js"
import * as Idempotency from "../Idempotency.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as Job from "./Job.js"
import * as JobEvents from "./JobEvents.js"
import * as JobSignals from "./JobSignals.js"
import * as JobStore from "./JobStore.js"
import * as JobWorkflow from "./JobWorkflow.js"
import * as OutcomeWriter from "./OutcomeWriter.js"
import type * as OpenAiCompat from "../llm/OpenAiCompat.js"
import * as ProviderProfiles from "./ProviderProfiles.js"
import * as RateLimiter from "../RateLimiter.js"
import * as RetryPolicy from "../RetryPolicy.js"
import type * as TaskError from "../TaskError.js"

/**
 * How often a running job's progress is published.
 *
 * @since 0.1.0
 * @category constants
 */
export const progressEvery = Duration.millis(500)

/** Executions started at once (see `execute`). */
const startsAtOnce = 8

/** Every how many progress ticks a running job's state is read back, for a cancel whose notice was lost. */
const cancelCheckEvery = 4

/**
 * A running job's latest figures, as its worker published them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  /** Items settled per second lately (0 if nothing settled for `staleAfter`). */
  readonly rate: number
  /** The provider's concurrency limit where the job runs. */
  readonly concurrencyLimit: number | undefined
  /**
   * The job's totals as published, when this process saw them within
   * `staleAfter` (one read back from the store may be an earlier round's:
   * read the totals from the store then).
   */
  readonly totals: JobStore.Totals | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Runner {
  /**
   * Queues the start (or finding) of the execution of the job's round, and
   * returns: starting an execution costs the engine tens of milliseconds, which
   * a submission need not wait for. Events published before are stored
   * before the start, so they come first in the job's log. (A job stored but
   * not started when the process dies is started by `resumeUnfinished`.)
   */
  readonly execute: (job: Pick<JobStore.JobRow, "id" | "total" | "spec">, round: number) => Effect.Effect<void>
  /** Tells every process to interrupt the job's chunks it runs. */
  readonly cancel: (jobId: string) => Effect.Effect<void>
  /** Each job's last published progress, if it published any (in the order of `jobIds`). */
  readonly progressOf: (jobIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Progress | undefined>, JobStore.JobStoreError>
  /** Starts again every job left queued or running (after a restart; executions are idempotent); how many. */
  readonly resumeUnfinished: Effect.Effect<number, JobStore.JobStoreError>
}

/**
 * A published rate older than this is taken as 0: nothing settled since.
 *
 * @since 0.1.0
 * @category constants
 */
export const staleAfter = Duration.seconds(10)

/**
 * @since 0.1.0
 * @category tags
 */
export class JobRunner extends Context.Tag("effect-batch/JobRunner")<JobRunner, Runner>() {}

/**
 * How often a batch job reads its running batches. Default 15 s, growing
 * ×1.5 to 5 min; tests and demos against the simulator read more often.
 *
 * @since 0.1.0
 * @category references
 */
export class BatchPoll extends Context.Reference<BatchPoll>()("effect-batch/JobRunner/BatchPoll", {
  defaultValue: (): Schedule.Schedule<unknown> => Schedule.exponential("15 seconds", 1.5).pipe(Schedule.either(Schedule.spaced("5 minutes")))
}) {}

/**
 * The checkpoint run under which a batch-mode job keeps its shards.
 *
 * @since 0.1.0
 * @category models
 */
export const batchRunId = (jobId: string): string => `job/${jobId}`

/** A pending item, as the task, `estimate` and `settle` take it. */
type Item = { readonly index: number, readonly input: Job.ItemInput }

/** Whether a round runs through the provider's batch API: a replay of dead letters (round > 0) runs live, as a batch run's record is of the whole job, once. */
const runsInBatchMode = (spec: Job.Spec, round: number) => spec.mode === "batch" && round === 0

const noFiberRefs = FiberRefs.empty()

/**
 * Runs `effect` with the fiber refs that differ from their initial value, each one level deep, and gives the
 * fiber its own back after. An activity's fiber carries about nine fiber refs that the workflow engine and the
 * cluster set (log annotations, tracer and error-level flags…), each a stack that grows a level per fork; a
 * chunk's every item forks them and copies the whole map at each step that sets one (its context, each span).
 */
const withLeanFiberRefs = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.getFiberRefs, (saved) =>
    Effect.updateFiberRefs((fiberId, refs) => {
      const kept = new Map<FiberRef.FiberRef<unknown>, readonly [readonly [FiberId.Single, unknown]]>()
      for (const ref of FiberRefs.fiberRefs(refs)) {
        const value = FiberRefs.getOrDefault(refs, ref)
        // A ref left out reads as its initial value (what it reads in no fiber's refs).
        if (!Equal.equals(value, FiberRefs.getOrDefault(noFiberRefs, ref))) kept.set(ref, [[fiberId, value]])
      }
      return FiberRefs.unsafeMake(kept)
    }).pipe(
      Effect.zipRight(effect),
      Effect.ensuring(Effect.updateFiberRefs(() => saved))
    ))

const failureOf = (error: TaskError.TaskError): Job.Failure => ({
  class: error._tag,
  message: error.message,
  ...(Predicate.hasProperty(error, "status") && typeof error.status === "number" ? { status: error.status } : {})
})

/** A rolling window of (time, settled) to tell the rate. */
class RateWindow {
  private readonly samples: Array<readonly [number, number]> = []
  /** Items recorded here so far. */
  settled = 0
  add(now: number, n: number): void {
    this.settled += n
    this.samples.push([now, this.settled])
    while (this.samples.length > 2 && now - this.samples[0]![0] > 10_000) this.samples.shift()
  }

  rate(now: number): number {
    if (this.samples.length < 2) return 0
    const [t0, s0] = this.samples[0]!
    const [, s1] = this.samples[this.samples.length - 1]!
    const span = Math.max(1000, now - t0)
    return now - this.samples[this.samples.length - 1]![0] > 10_000 ? 0 : ((s1 - s0) * 1000) / span
  }
}

const make = Effect.gen(function*() {
  const store = yield* JobStore.JobStore
  const events = yield* JobEvents.JobEvents
  const signals = yield* JobSignals.JobSignals
  const profiles = yield* ProviderProfiles.ProviderProfiles
  const clock = yield* Effect.clock
  const now = () => clock.unsafeCurrentTimeMillis()
  const context = yield* Effect.context<HttpClient.HttpClient | WorkflowEngine.WorkflowEngine>()

  const cancelSignals = new Map<string, Deferred.Deferred<void>>()
  const signalOf = (jobId: string) => {
    let signal = cancelSignals.get(jobId)
    if (signal === undefined) {
      signal = Deferred.unsafeMake<void>(FiberId.none)
      cancelSignals.set(jobId, signal)
    }
    return signal
  }
  const budgets = new Map<string, Budget.Ledger>()
  /** The jobs with chunks running in this process: how many, and their provider's limiter (for the progress). */
  const running = new Map<string, { chunks: number, readonly limiter: ConcurrencyLimiter.Limiter }>()
  const track = <A, E, R>(jobId: string, limiter: ConcurrencyLimiter.Limiter, effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const entry = running.get(jobId)
        if (entry === undefined) running.set(jobId, { chunks: 1, limiter })
        else entry.chunks++
      }),
      () => effect,
      () =>
        Effect.sync(() => {
          const entry = running.get(jobId)!
          if (--entry.chunks === 0) running.delete(jobId)
        })
    )
  const rates = new Map<string, RateWindow>()
  /** What was last published of each running job: items recorded here by then, and the limit. */
  const published = new Map<string, { recorded: number, limit: number }>()

  const failed = (what: string) => (cause: Cause.Cause<unknown>) =>
    Effect.fail(new JobWorkflow.ChunkFailed({ message: `${what}: ${Cause.pretty(cause).split("\n")[0]}` }))

  const jobOf = (jobId: string) =>
    Effect.flatMap(store.get(jobId), (job) =>
      job === undefined ? Effect.dieMessage(`job ${jobId} is not in the store`) : Effect.succeed(job))

  const budgetOf = (job: JobStore.JobRow) =>
    Effect.gen(function*() {
      const known = budgets.get(`${job.id}/${job.round}`)
      if (known !== undefined) return known
      // What an earlier round (or an attempt before a restart) spent counts against the job's budget, if it has one.
      const maxCost = job.spec.maxCost
      const ledger = Budget.unsafeMake(maxCost === undefined ? {} : { maxCost: Math.max(0, maxCost - (yield* store.totals(job.id)).cost) })
      budgets.set(`${job.id}/${job.round}`, ledger)
      return ledger
    })

  const writer = yield* OutcomeWriter.make(store, now)

  /** A result as the job keeps it; counted into the job's rate. */
  const outcomeOf = (
    job: JobStore.JobRow,
    items: ReadonlyArray<Item>,
    result: Batch.Result<OpenAiCompat.ChatCompletion, TaskError.TaskError>
  ): JobStore.Outcome => {
    let window = rates.get(job.id)
    if (window === undefined) rates.set(job.id, window = new RateWindow())
    window.add(now(), 1)
    const index = items[result.index]!.index
    if (result._tag === "Succeeded") {
      const c = result.value
      return {
        index,
        status: "succeeded",
        output: { content: c.content, finishReason: c.finishReason, usage: c.usage, cost: c.cost, model: c.model },
        attempts: result.attempts,
        durationMs: result.durationMs,
        cost: c.cost,
        tokens: c.usage.totalTokens
      }
    }
    if (result._tag === "Failed") {
      return {
        index,
        status: "failed",
        output: failureOf(result.error),
        errorClass: result.errorClass,
        attempts: result.attempts,
        durationMs: result.durationMs,
        cost: 0,
        tokens: 0
      }
    }
    return { index, status: "skipped", output: { reason: result.reason }, attempts: result.attempts, durationMs: 0, cost: 0, tokens: 0 }
  }
  /** A final failure's event, for the job's log. */
  const failedEvent = (job: JobStore.JobRow, outcome: JobStore.Outcome) =>
    outcome.status === "failed"
      ? events.publish(job.id, "item-failed", {
          index: outcome.index,
          errorClass: outcome.errorClass,
          message: outcome.output.message,
          attempts: outcome.attempts
        })
      : undefined
  /**
   * Hands a result to the process's writer (and a final failure to the job's events); `undefined` when that was
   * all, at once. Whoever hands results over waits for `writer.flushed` before saying they are done.
   */
  const hand = (
    job: JobStore.JobRow,
    items: ReadonlyArray<Item>,
    result: Batch.Result<OpenAiCompat.ChatCompletion, TaskError.TaskError>
  ): Effect.Effect<void> | undefined => {
    const outcome = outcomeOf(job, items, result)
    const waited = writer.add(job.id, outcome)
    const event = failedEvent(job, outcome)
    if (event === undefined) return waited
    return waited === undefined ? event : Effect.zipRight(waited, event)
  }

  const runChunk: JobWorkflow.Steps["runChunk"] = (jobId, chunk, size) =>
    Effect.gen(function*() {
      const job = yield* Effect.flatMap(jobOf(jobId), begin)
      if (job.state === "cancelled") return "cancelled" as const
      const provider = profiles.get(job.profile)
      if (provider === undefined) return yield* Effect.dieMessage(`the profile ${job.profile} is no longer configured`)
      const pending = yield* store.pending(jobId, chunk * size, (chunk + 1) * size)
      if (pending.length === 0) return "done" as const
      // Where a job's chunks run is worth a line only when there are several runners to tell apart.
      if (signals.shared) yield* Effect.logInfo(`job ${jobId}: chunk ${chunk} runs here (${pending.length} items pending)`)
      const items: ReadonlyArray<Item> = pending
      const startedAt = job.startedAt ?? now()
      const remaining = (seconds: number | undefined) => seconds === undefined ? undefined : startedAt + seconds * 1000 - now()
      const soft = remaining(job.spec.softLimitSeconds)
      const hard = remaining(job.spec.hardLimitSeconds)
      if ((soft !== undefined && soft <= 0) || (hard !== undefined && hard <= 0)) return "stopped" as const

      const llm = provider.chat(job.model)
      const { estimate, settle } = llm.options
      const options: Batch.Options<Item, OpenAiCompat.ChatCompletion, TaskError.TaskError> = {
        estimate: (item) => estimate!(item.input, item.index),
        settle: (value, item) => settle!(value, item.input, item.index),
        ...(job.spec.itemTimeoutSeconds === undefined ? {} : { timeout: Duration.seconds(job.spec.itemTimeoutSeconds) }),
        ...(job.spec.itemDeadlineSeconds === undefined ? {} : { deadline: Duration.seconds(job.spec.itemDeadlineSeconds) }),
        ...(soft === undefined ? {} : { stopWhen: Effect.sleep(Duration.millis(soft)) }),
        // `BatchMetrics` under `batch="job"`, the profile and the model (tagged below): never the job id, which
        // would make a series per job.
        metrics: true,
        name: "job",
        // What the chunk's items waited on, for the job's profile (kept even when the chunk is cut short).
        onReport: (report) =>
          report.timeSpent.items === 0 ? Effect.void : store.addTimeSpent(jobId, report.timeSpent).pipe(
            Effect.catchAll((error) => Effect.logWarning(`job ${jobId}: its time spent could not be kept`, error))
          )
      }
      // Called with the item's index in the job: its idempotency key follows from the job's `CurrentRun`.
      const task = (item: Item) => llm.task(item.input, item.index)
      let stopped = false
      const since = writer.current()
      // Each result goes to the process's writer as it settles (a stream per chunk cost a stream step per
      // result: with a hundred chunks running, results come one at a time); the chunk ends once they are stored.
      const results = Batch.run(items, task, {
        ...options,
        onResult: (result) => {
          if (result._tag === "Skipped") stopped = true
          return hand(job, items, result)
        }
      }).pipe(Effect.zipRight(writer.flushed(jobId, since)))
      // The items see only what they use: the HTTP client, the chunk's span and the batch's services. The process's
      // context holds some forty services (the cluster's, SQL, the HTTP server…), and every step that adds to an
      // item's context (the HTTP client's own services, each span) copied all of them: with this, run B of the jobs
      // bench allocated about 12 % less in all (sampled allocations).
      const outer = (yield* Effect.context<never>()) as Context.Context<HttpClient.HttpClient | Tracer.ParentSpan>
      let batchContext = Context.make(ConcurrencyLimiter.ConcurrencyLimiter, provider.limiter).pipe(
        Context.merge(Context.pick(HttpClient.HttpClient, Tracer.ParentSpan)(outer)),
        Context.add(RateLimiter.RateLimiter, provider.rateLimiter),
        Context.add(Budget.Budget, yield* budgetOf(job)),
        Context.add(Idempotency.CurrentRun, { runId: jobId })
      )
      if (job.spec.maxAttempts !== undefined) {
        batchContext = Context.add(batchContext, RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: job.spec.maxAttempts }))
      }
      const running = results.pipe(
        // In place of the process's context, not merged into it.
        Effect.mapInputContext((_: Context.Context<never>) => batchContext),
        withLeanFiberRefs,
        BatchMetrics.withLabels({ profile: job.profile, model: job.model }),
        ConcurrencyLimiter.withPriority(job.priority),
        Effect.as<JobWorkflow.ChunkOutcome>("done")
      )
      const guarded: Effect.Effect<JobWorkflow.ChunkOutcome, JobStore.JobStoreError, HttpClient.HttpClient> = Effect.raceAll([
        Effect.map(running, (outcome): JobWorkflow.ChunkOutcome => stopped ? "stopped" : outcome),
        Effect.as(Deferred.await(signalOf(jobId)), "cancelled" as const),
        ...(hard === undefined ? [] : [Effect.as(Effect.sleep(Duration.millis(hard)), "timedOut" as const)])
      ])
      // Activities run uninterruptibly (the engine's choice); the chunk's own race must be able to stop the batch.
      return yield* track(jobId, provider.limiter, Effect.interruptible(guarded))
    }).pipe(
      Effect.tap((outcome) => Effect.annotateCurrentSpan("effect-batch.chunk_outcome", outcome)),
      Effect.withSpan("effect-batch.job.chunk", {
        attributes: { "effect-batch.job": jobId, "effect-batch.chunk": chunk },
        captureStackTrace: false
      }),
      Effect.provide(context),
      Effect.catchAllCause(failed(`chunk ${chunk}`)),
      // Logged here, where it happens: the workflow body replays after each durable wait.
      Effect.tapError((error) => Effect.logWarning(`job ${jobId}: ${error.message}; a chunk is retried after a backoff, ${JobWorkflow.chunkAttempts} attempts in all`))
    )

  /**
   * The job, moved to running first if it is queued (the first step of a round to begin does it; the transition
   * table refuses the others, and a job cancelled meanwhile), with the `running` event published once.
   */
  const begin = (job: JobStore.JobRow) =>
    Effect.gen(function*() {
      if (job.state !== "queued") return job
      const at = now()
      if (!(yield* store.setState(job.id, "running", { now: at }))) return yield* jobOf(job.id)
      yield* events.publish(job.id, "state", { state: "running" })
      return { ...job, state: "running" as const, startedAt: job.startedAt ?? at }
    })

  const start: JobWorkflow.Steps["start"] = (jobId) =>
    Effect.gen(function*() {
      const job = yield* jobOf(jobId)
      if (job.state === "cancelled") return { _tag: "Cancelled" } as const
      yield* begin(job)
      return runsInBatchMode(job.spec, job.round)
        ? { _tag: "Started", total: job.total, mode: "batch" } as const
        : { _tag: "Started", total: job.total } as const
    }).pipe(Effect.catchAllCause(failed("start")))

  const finish: JobWorkflow.Steps["finish"] = (jobId, outcomes) =>
    Effect.gen(function*() {
      const job = yield* jobOf(jobId)
      const at = now()
      const [state, reason]: readonly [Job.JobState, string | undefined] = job.state === "cancelled" || outcomes.includes("cancelled")
        ? ["cancelled", job.reason ?? "cancelled"]
        : outcomes.includes("failed")
          ? ["failed", `a chunk failed ${JobWorkflow.chunkAttempts} times`]
          : outcomes.includes("timedOut")
            ? ["failed", "hard time limit reached"]
            : outcomes.includes("stopped")
              ? ["stopped", budgets.get(`${jobId}/${job.round}`)?.unsafeSnapshot().exceeded !== undefined ? "budget reached" : "soft time limit reached"]
              : ["finished", undefined]
      yield* store.skipPending(jobId, state === "finished" ? "not run" : reason!, at)
      // A job cancelled meanwhile stays cancelled: the table refuses the move.
      if (job.state !== "cancelled") yield* store.setState(jobId, state, { reason, now: at })
      budgets.delete(`${jobId}/${job.round}`)
      rates.delete(jobId)
      published.delete(jobId)
      cancelSignals.delete(jobId)
      writer.forget(jobId)
      const totals = yield* store.totals(jobId)
      yield* events.publish(jobId, "progress", { ...totals, rate: 0 })
      yield* events.publish(jobId, "state", { state, ...(reason === undefined ? {} : { reason }) })
      return state
    }).pipe(Effect.catchAllCause(failed("finish")))

  // A cancel notice from any process interrupts the job's chunks running here.
  const cancels = yield* signals.subscribe("cancel")
  yield* Queue.take(cancels).pipe(
    Effect.flatMap((jobId) => running.has(jobId) ? Deferred.succeed(signalOf(jobId), undefined) : Effect.void),
    Effect.forever,
    Effect.forkScoped
  )

  // Progress of the jobs running here, every `progressEvery`, when it moved; the provider's limit when it changed.
  // Moved is told by what was recorded here (reading the totals of every running job at every tick cost the
  // runner about a tenth of its CPU with 50 jobs), and the totals of those that moved are read in one go, as are
  // the states of all of them every `cancelCheckEvery` ticks: a job found cancelled in the store is interrupted
  // here (its notice may have been lost between processes).
  let ticks = 0
  const tick = Effect.gen(function*() {
    if (running.size === 0) return
    const checkCancel = ticks++ % cancelCheckEvery === 0
    const jobIds = Array.from(running.keys())
    if (checkCancel) {
      const states = yield* store.statesOf(jobIds)
      for (const jobId of jobIds) if (states.get(jobId) === "cancelled") yield* Deferred.succeed(signalOf(jobId), undefined)
    }
    // Items recorded here by now: what the totals read next include at least.
    const recordedNow = jobIds.map((jobId) => rates.get(jobId)?.settled ?? 0)
    const moved = jobIds.filter((jobId, i) => published.get(jobId)?.recorded !== recordedNow[i])
    const totals = moved.length === 0 ? undefined : yield* store.totalsOf(moved)
    for (let i = 0; i < jobIds.length; i++) {
      const jobId = jobIds[i]!
      // Its last chunk may have ended while this tick read, and the job's final state been published: nothing
      // follows that (a subscriber would wait for a final state after it).
      const entry = running.get(jobId)
      if (entry === undefined) continue
      const limit = yield* entry.limiter.current
      const recorded = recordedNow[i]!
      const last = published.get(jobId)
      const jobTotals = last === undefined || last.recorded !== recorded ? totals?.get(jobId) ?? JobStore.noTotals : undefined
      if (jobTotals !== undefined) {
        const rate = rates.get(jobId)?.rate(now()) ?? 0
        yield* events.publish(jobId, "progress", {
          ...jobTotals,
          rate,
          ...(rate > 0 ? { etaSeconds: jobTotals.pending / rate } : {}),
          concurrencyLimit: limit
        })
      }
      if (last === undefined || last.limit !== limit) yield* events.publish(jobId, "limit", { limit })
      published.set(jobId, { recorded, limit })
    }
  })
  yield* tick.pipe(
    Effect.tapErrorCause(Effect.logWarning),
    Effect.ignore,
    Effect.repeat(Schedule.spaced(progressEvery)),
    Effect.forkScoped
  )

  const batchPoll = yield* BatchPoll
  /** Where batch jobs keep their shards; without a store in context (tests), in memory, so not across a crash. */
  const checkpoints = Option.getOrUndefined(yield* Effect.serviceOption(CheckpointStore.CheckpointStore)) ??
    (yield* CheckpointStore.makeMemory)

  const runBatch: JobWorkflow.Steps["runBatch"] = (jobId) =>
    Effect.gen(function*() {
      const job = yield* Effect.flatMap(jobOf(jobId), begin)
      if (job.state === "cancelled") return "cancelled" as const
      const provider = profiles.get(job.profile)
      if (provider === undefined) return yield* Effect.dieMessage(`the profile ${job.profile} is no longer configured`)
      // Every item, settled or not: line names are positions, the same in every attempt; those settled are in the record.
      const all = yield* store.inputs(jobId, 0, job.total)
      const pending = new Set(all.filter((item) => item.pending).map((item) => item.index))
      if (pending.size === 0) return "done" as const
      const items: ReadonlyArray<Item> = all
      const { apiKey, baseUrl } = provider.config
      const spec = BatchApi.chat({ baseUrl, apiKey, model: job.model })
      const batchProvider = yield* OpenAiBatch.make({ baseUrl, apiKey })
      const runId = batchRunId(jobId)
      const since = writer.current()
      const running = BatchApi.run(items, {
        endpoint: spec.endpoint,
        toRequest: (item, i) => spec.toRequest(item.input, i),
        decode: (body, item, i) => spec.decode(body, item.input, i),
        tokens: (item, i) => spec.tokens!(item.input, i),
        estimate: (item, i) => spec.estimate!(item.input, i),
        cost: spec.cost,
        checkpoint: { runId },
        exclude: new Set(all.flatMap((item, position) => item.pending ? [] : [position])),
        poll: batchPoll,
        // Items settled before (a rejected line, an earlier attempt's) are in the job already. The rest go to the
        // process's writer, a shard's ingested lines in one write: one lost in a crash is handed over again, since
        // a run attached again hands over every outcome its checkpoint holds.
        onResult: (result) => pending.has(items[result.index]!.index) ? hand(job, items, result) ?? Effect.void : Effect.void
      }).pipe(
        Effect.zipLeft(writer.flushed(jobId, since)),
        Effect.provideService(BatchProvider.BatchProvider, batchProvider),
        Effect.provideService(CheckpointStore.CheckpointStore, checkpoints),
        Effect.provideService(Budget.Budget, yield* budgetOf(job)),
        Effect.map(({ report }): JobWorkflow.ChunkOutcome => report.skipped > 0 ? "stopped" : "done")
      )
      const cancelled = Effect.zipRight(
        Deferred.await(signalOf(jobId)),
        BatchApi.cancel(runId).pipe(
          Effect.provideService(BatchProvider.BatchProvider, batchProvider),
          Effect.provideService(CheckpointStore.CheckpointStore, checkpoints),
          Effect.as("cancelled" as const)
        )
      )
      return yield* track(jobId, provider.limiter, Effect.interruptible(Effect.raceFirst(running, cancelled)))
    }).pipe(
      Effect.provide(context),
      Effect.catchAllCause(failed("batch")),
      Effect.tapError((error) => Effect.logWarning(`job ${jobId}: ${error.message}; the batch run is retried after a backoff, ${JobWorkflow.chunkAttempts} attempts in all`))
    )

  return { start, runChunk, runBatch, finish } satisfies JobWorkflow.Steps
})

const decodeProgress = Schema.decodeUnknownOption(Schema.parseJson(Job.PublishedProgress))

const makeControl = Effect.gen(function*() {
  const store = yield* JobStore.JobStore
  const events = yield* JobEvents.JobEvents
  const signals = yield* JobSignals.JobSignals
  const clock = yield* Effect.clock
  const engine = yield* WorkflowEngine.WorkflowEngine

  const toStart = yield* Queue.unbounded<typeof JobWorkflow.BatchJob.payloadSchema.Type>()
  const starter = Queue.take(toStart).pipe(
    // The `queued` event a replay published is stored first (a submit's went in with the job): a runner in another
    // process publishes the job's next events, which would otherwise be numbered before it when they flush sooner.
    Effect.tap(() => events.flush),
    Effect.flatMap((payload) => JobWorkflow.BatchJob.execute(payload, { discard: true })),
    Effect.provideService(WorkflowEngine.WorkflowEngine, engine),
    Effect.tapErrorCause(Effect.logError),
    Effect.ignore,
    Effect.forever
  )
  // Several starts at once: each is a few round trips to the engine's storage, and one at a time put the
  // 50th of a burst of submissions seconds behind the first.
  for (let i = 0; i < startsAtOnce; i++) yield* Effect.forkScoped(starter)
  // With the round's total and mode the workflow has no start step (see JobWorkflow), its chunks are of the size
  // sent, and a round of one step finishes in that step's activity. An execution that exists already (a resumed
  // one) keeps the payload it was started with: its id is the job's and the round's.
  const execute: Runner["execute"] = (job, round) =>
    Queue.offer(toStart, {
      jobId: job.id,
      round,
      total: job.total,
      chunkSize: JobWorkflow.chunkSize,
      finishInStep: true,
      ...(runsInBatchMode(job.spec, round) ? { mode: "batch" as const } : {})
    }).pipe(Effect.asVoid)

  const resumeUnfinished = Effect.flatMap(store.unfinished, (jobs) =>
    Effect.as(Effect.forEach(jobs, (job) => execute(job, job.round), { discard: true }), jobs.length))

  /** A progress event as the API shows it; its totals only when `live` (seen here) and fresh. */
  const progressFrom = (event: JobEvents.Event | JobStore.StoredEvent | undefined, live: boolean): Progress | undefined => {
    const data = event === undefined ? Option.none() : decodeProgress(event.data)
    if (Option.isNone(data)) return undefined
    const fresh = clock.unsafeCurrentTimeMillis() - data.value.at <= Duration.toMillis(staleAfter)
    const { concurrencyLimit, cost, failed, pending, rate, skipped, succeeded, tokens, total } = data.value
    return {
      rate: fresh ? rate : 0,
      concurrencyLimit,
      totals: fresh && live ? { cost, failed, pending, skipped, succeeded, tokens, total } : undefined
    }
  }
  // Seen here as it was published (by this process or, through a notice, another); else read back, for all the
  // jobs not seen in one read.
  const progressOf: Runner["progressOf"] = (jobIds) =>
    Effect.suspend(() => {
      const seen = jobIds.map((jobId) => events.latest(jobId, "progress"))
      const unseen = jobIds.filter((_, i) => seen[i] === undefined)
      if (unseen.length === 0) return Effect.succeed(seen.map((event) => progressFrom(event, true)))
      return Effect.map(store.lastEventOf(unseen, "progress"), (stored) =>
        jobIds.map((jobId, i) => seen[i] === undefined ? progressFrom(stored.get(jobId), false) : progressFrom(seen[i], true)))
    })

  return {
    execute,
    cancel: (jobId) => signals.send("cancel", jobId),
    progressOf,
    resumeUnfinished
  } satisfies Runner
})

/**
 * The control: what the API calls. Starts executions on the `WorkflowEngine`
 * in context (a client-only cluster engine is enough: it never runs one).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerControl: Layer.Layer<
  JobRunner,
  never,
  JobStore.JobStore | JobEvents.JobEvents | JobSignals.JobSignals | WorkflowEngine.WorkflowEngine
> = Layer.scoped(JobRunner, makeControl)

/**
 * What the worker needs (and so a process that runs jobs).
 *
 * @since 0.1.0
 * @category models
 */
export type WorkerNeeds =
  | JobStore.JobStore
  | JobEvents.JobEvents
  | JobSignals.JobSignals
  | ProviderProfiles.ProviderProfiles
  | HttpClient.HttpClient
  | WorkflowEngine.WorkflowEngine

/**
 * The worker: the workflow registered with the engine, its steps this
 * process's (only the workflow sees them). Needs a `WorkflowEngine` that
 * runs executions (`ClusterWorkflowEngine.layer` on `SingleRunner`, or on a
 * cluster runner) and an `HttpClient`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWorker: Layer.Layer<never, never, WorkerNeeds> = JobWorkflow.layer.pipe(
  Layer.provide(Layer.scoped(JobWorkflow.JobSteps, make))
)

/**
 * Both: one process that takes submissions and runs them.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobRunner, never, WorkerNeeds> = Layer.merge(layerControl, layerWorker)
