/**
 * Runs jobs durably: each job (and each replay of its dead letters) is one
 * `@effect/workflow` execution of `BatchJob`, whose items go through `Batch`
 * in chunks of `chunkSize`, each chunk an activity.
 *
 * - Durable: the workflow engine (on `@effect/cluster`, SQLite or Postgres)
 *   journals every finished activity and resumes unfinished executions when
 *   the service starts again. A chunk re-executed after a crash asks the
 *   `JobStore` for the items still pending, so what was recorded is not run
 *   again; outcomes are recorded as `Batch.stream` emits them (one
 *   transaction per emitted group). Items in flight at a crash, and items
 *   settled but not yet committed (the group being written), are called
 *   again, with the same idempotency key (job id + index) sent to the provider.
 * - Idempotent: the execution id derives from the job id and round, so
 *   starting an execution twice yields the same one.
 * - Job-level retry: a chunk that fails as a whole (storage error, defect) is
 *   retried up to `chunkAttempts` times, waiting with `DurableClock` (so the
 *   backoff survives a restart), and then fails the job.
 * - Shared limits: a chunk runs under its provider profile's limiters, at the
 *   job's priority (`ConcurrencyLimiter.withPriority`).
 * - Time limits: soft (stop admitting, in-flight items finish, the rest are
 *   `skipped`) through `Batch`'s `stopWhen`; hard (in-flight items
 *   interrupted) by racing the chunk; both measured from the job's start, so
 *   a restart does not reset them. Per item: `itemTimeout`, `itemDeadline`.
 * - Cancel: `cancel` interrupts the job's chunks running in this process at
 *   once (aborting their requests); a chunk that starts later finds the job
 *   cancelled in the store and does nothing. (The engine's own `interrupt`
 *   only acts when a workflow suspends, and activities are uninterruptible,
 *   hence this signal.)
 *
 * What it does not promise: exactly-once calls (at-least-once for items in
 * flight at a crash); cancel signals are per process.
 *
 * @since 0.1.0
 */
import * as Activity from "@effect/workflow/Activity"
import * as DurableClock from "@effect/workflow/DurableClock"
import * as Workflow from "@effect/workflow/Workflow"
import type * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Batch from "../Batch.js"
import * as Budget from "../Budget.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import type * as Job from "./Job.js"
import * as JobEvents from "./JobEvents.js"
import * as JobStore from "./JobStore.js"
import type * as OpenAiCompat from "../llm/OpenAiCompat.js"
import * as ProviderProfiles from "./ProviderProfiles.js"
import * as RateLimiter from "../RateLimiter.js"
import * as RetryPolicy from "../RetryPolicy.js"
import type * as TaskError from "../TaskError.js"

/** Items per chunk activity. */
export const chunkSize = 100
/** Chunks of one job in flight at once: the next starts while the previous one's slowest items finish. */
export const chunksInFlight = 2
/** How often a running job's progress is published. */
export const progressEvery = Duration.millis(500)
/** Attempts per chunk before the job fails. */
export const chunkAttempts = 5

/**
 * How a chunk ended.
 *
 * @since 0.1.0
 * @category models
 */
export const ChunkOutcome = Schema.Literal("done", "stopped", "cancelled", "timedOut", "failed")

/**
 * @since 0.1.0
 * @category models
 */
export type ChunkOutcome = typeof ChunkOutcome.Type

/**
 * A chunk that could not run (its failure is retried with backoff).
 *
 * @since 0.1.0
 * @category errors
 */
export class ChunkFailed extends Schema.TaggedError<ChunkFailed>()("ChunkFailed", { message: Schema.String }) {}

/**
 * The workflow of one round of a job.
 *
 * @since 0.1.0
 * @category workflows
 */
export const BatchJob = Workflow.make({
  name: "effect-batch/BatchJob",
  payload: { jobId: Schema.String, round: Schema.Int },
  success: Schema.String,
  idempotencyKey: ({ jobId, round }) => `${jobId}/${round}`
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Runner {
  /**
   * Queues the start (or finding) of the execution of the job's round, and
   * returns: starting an execution costs the engine tens of milliseconds, which
   * a submission need not wait for. (A job stored but not started when the
   * process dies is started by `resumeUnfinished`.)
   */
  readonly execute: (jobId: string, round: number) => Effect.Effect<void>
  /** Interrupts the job's chunks running in this process. */
  readonly cancel: (jobId: string) => Effect.Effect<void>
  /** Items settled per second lately, in this process (0 if none running). */
  readonly rate: (jobId: string) => number
  /** Starts again every job left queued or running (after a restart; executions are idempotent). */
  readonly resumeUnfinished: Effect.Effect<number, JobStore.JobStoreError>
  /** The chunk activity's effect. */
  readonly runChunk: (jobId: string, chunk: number) => Effect.Effect<ChunkOutcome, ChunkFailed>
  /** Moves the job to running; its item count, or -1 if it is cancelled. */
  readonly start: (jobId: string) => Effect.Effect<number, ChunkFailed>
  /** Decides and records the final state. */
  readonly finish: (jobId: string, outcomes: ReadonlyArray<ChunkOutcome>) => Effect.Effect<Job.JobState, ChunkFailed>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class JobRunner extends Context.Tag("effect-batch/JobRunner")<JobRunner, Runner>() {}

/** A pending item, as the task, `estimate` and `settle` take it. */
type Item = { readonly index: number, readonly input: Job.ItemInput }

const failureOf = (error: TaskError.TaskError): Job.Failure => ({
  class: error._tag,
  message: error.message,
  ...(Predicate.hasProperty(error, "status") && typeof error.status === "number" ? { status: error.status } : {})
})

/** A rolling window of (time, settled) to tell the rate. */
class RateWindow {
  private readonly samples: Array<readonly [number, number]> = []
  private settled = 0
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
  /** What was last published of each running job. */
  const published = new Map<string, { settled: number, limit: number }>()

  const failed = (what: string) => (cause: Cause.Cause<unknown>) =>
    Effect.fail(new ChunkFailed({ message: `${what}: ${Cause.pretty(cause).split("\n")[0]}` }))

  const jobOf = (jobId: string) =>
    Effect.flatMap(store.get(jobId), (job) =>
      job === undefined ? Effect.dieMessage(`job ${jobId} is not in the store`) : Effect.succeed(job))

  const budgetOf = (job: JobStore.JobRow) =>
    Effect.gen(function*() {
      const known = budgets.get(`${job.id}/${job.round}`)
      if (known !== undefined) return known
      const spent = (yield* store.totals(job.id)).cost
      const ledger = Budget.unsafeMake(job.spec.maxCost === undefined ? {} : { maxCost: Math.max(0, job.spec.maxCost - spent) })
      budgets.set(`${job.id}/${job.round}`, ledger)
      return ledger
    })

  const record = (
    job: JobStore.JobRow,
    items: ReadonlyArray<Item>,
    results: Iterable<Batch.Result<OpenAiCompat.ChatCompletion, TaskError.TaskError>>
  ) =>
    Effect.suspend(() => {
      const outcomes: Array<JobStore.Outcome> = []
      const failures: Array<Effect.Effect<void>> = []
      for (const result of results) {
        const index = items[result.index]!.index
        if (result._tag === "Succeeded") {
          const c = result.value
          outcomes.push({
            index,
            status: "succeeded",
            output: { content: c.content, finishReason: c.finishReason, usage: c.usage, cost: c.cost, model: c.model },
            attempts: result.attempts,
            durationMs: result.durationMs,
            cost: c.cost,
            tokens: c.usage.totalTokens
          })
        } else if (result._tag === "Failed") {
          outcomes.push({
            index,
            status: "failed",
            output: failureOf(result.error),
            errorClass: result.errorClass,
            attempts: result.attempts,
            durationMs: result.durationMs,
            cost: 0,
            tokens: 0
          })
          failures.push(events.publish(job.id, "item-failed", {
            index,
            errorClass: result.errorClass,
            message: result.error.message,
            attempts: result.attempts
          }))
        } else {
          outcomes.push({
            index,
            status: "skipped",
            output: { reason: result.reason },
            attempts: result.attempts,
            durationMs: 0,
            cost: 0,
            tokens: 0
          })
        }
      }
      let window = rates.get(job.id)
      if (window === undefined) rates.set(job.id, window = new RateWindow())
      window.add(now(), outcomes.length)
      return Effect.zipRight(store.record(job.id, outcomes, now()), Effect.all(failures, { discard: true }))
    })

  const runChunk = (jobId: string, chunk: number): Effect.Effect<ChunkOutcome, ChunkFailed> =>
    Effect.gen(function*() {
      const job = yield* jobOf(jobId)
      if (job.state === "cancelled") return "cancelled" as const
      const provider = profiles.get(job.profile)
      if (provider === undefined) return yield* Effect.dieMessage(`the profile ${job.profile} is no longer configured`)
      const pending = yield* store.pending(jobId, chunk * chunkSize, (chunk + 1) * chunkSize)
      if (pending.length === 0) return "done" as const
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
        ...(soft === undefined ? {} : { stopWhen: Effect.sleep(Duration.millis(soft)) })
      }
      const task = (item: Item) =>
        Effect.provideService(llm.task(item.input, item.index), CheckpointStore.CurrentItem, {
          runId: jobId,
          itemKey: String(item.index)
        })
      let stopped = false
      const results = Batch.stream(items, task, options).pipe(
        // Each group as the stream hands it over: what settled while the previous group was being written.
        // (Gathering for longer, e.g. 25 ms, saved no measurable CPU, and every item settled in that window
        // but not yet stored is called again after a crash: the restart test saw 9 re-calls at concurrency 8.)
        Stream.runForEachChunk((results) => {
          for (const r of results) if (r._tag === "Skipped") stopped = true
          return record(job, items, results)
        })
      )
      let batchContext = Context.make(ConcurrencyLimiter.ConcurrencyLimiter, provider.limiter).pipe(
        Context.add(RateLimiter.RateLimiter, provider.rateLimiter),
        Context.add(Budget.Budget, yield* budgetOf(job))
      )
      if (job.spec.maxAttempts !== undefined) {
        batchContext = Context.add(batchContext, RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: job.spec.maxAttempts }))
      }
      const running = results.pipe(
        Effect.provide(batchContext),
        ConcurrencyLimiter.withPriority(job.priority),
        Effect.as<ChunkOutcome>("done")
      )
      const guarded: Effect.Effect<ChunkOutcome, JobStore.JobStoreError, HttpClient.HttpClient> = Effect.raceAll([
        Effect.map(running, (outcome): ChunkOutcome => stopped ? "stopped" : outcome),
        Effect.as(Deferred.await(signalOf(jobId)), "cancelled" as const),
        ...(hard === undefined ? [] : [Effect.as(Effect.sleep(Duration.millis(hard)), "timedOut" as const)])
      ])
      // Activities run uninterruptibly (the engine's choice); the chunk's own race must be able to stop the batch.
      return yield* track(jobId, provider.limiter, Effect.interruptible(guarded))
    }).pipe(
      Effect.provide(context),
      Effect.catchAllCause(failed(`chunk ${chunk}`)),
      // Logged here, where it happens: the workflow body replays after each durable wait.
      Effect.tapError((error) => Effect.logWarning(`job ${jobId}: ${error.message}; a chunk is retried after a backoff, ${chunkAttempts} attempts in all`))
    )

  const start = (jobId: string) =>
    Effect.gen(function*() {
      const job = yield* jobOf(jobId)
      if (job.state === "cancelled") return -1
      // Refused for a job cancelled meanwhile (and for one already running: a start run again after a crash).
      if (yield* store.setState(jobId, "running", { now: now() })) {
        if (job.state !== "running") yield* events.publish(jobId, "state", { state: "running" })
      }
      return job.total
    }).pipe(Effect.catchAllCause(failed("start")))

  const finish = (jobId: string, outcomes: ReadonlyArray<ChunkOutcome>) =>
    Effect.gen(function*() {
      const job = yield* jobOf(jobId)
      const at = now()
      const [state, reason]: readonly [Job.JobState, string | undefined] = job.state === "cancelled" || outcomes.includes("cancelled")
        ? ["cancelled", job.reason ?? "cancelled"]
        : outcomes.includes("failed")
          ? ["failed", `a chunk failed ${chunkAttempts} times`]
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
      const totals = yield* store.totals(jobId)
      yield* events.publish(jobId, "progress", { ...totals, rate: 0 })
      yield* events.publish(jobId, "state", { state, ...(reason === undefined ? {} : { reason }) })
      return state
    }).pipe(Effect.catchAllCause(failed("finish")))

  const toStart = yield* Queue.unbounded<{ readonly jobId: string, readonly round: number }>()
  yield* Queue.take(toStart).pipe(
    Effect.flatMap(({ jobId, round }) => BatchJob.execute({ jobId, round }, { discard: true })),
    Effect.provide(context),
    Effect.tapErrorCause(Effect.logError),
    Effect.ignore,
    Effect.forever,
    Effect.forkScoped
  )
  const execute = (jobId: string, round: number) => Queue.offer(toStart, { jobId, round }).pipe(Effect.asVoid)

  const cancel = (jobId: string) => Effect.asVoid(Deferred.succeed(signalOf(jobId), undefined))

  const resumeUnfinished = Effect.flatMap(store.unfinished, (jobs) =>
    Effect.as(Effect.forEach(jobs, (job) => execute(job.id, job.round), { discard: true }), jobs.length))

  // Progress of the jobs running here, every `progressEvery`, when it moved; the provider's limit when it changed.
  const tick = Effect.suspend(() => Effect.forEach(Array.from(running), ([jobId, { limiter }]) =>
    Effect.gen(function*() {
      const limit = yield* limiter.current
      const totals = yield* store.totals(jobId)
      const settled = totals.total - totals.pending
      const last = published.get(jobId)
      const rate = rates.get(jobId)?.rate(now()) ?? 0
      if (last === undefined || last.settled !== settled) {
        yield* events.publish(jobId, "progress", {
          ...totals,
          rate,
          ...(rate > 0 ? { etaSeconds: totals.pending / rate } : {}),
          concurrencyLimit: limit
        })
      }
      if (last === undefined || last.limit !== limit) yield* events.publish(jobId, "limit", { limit })
      published.set(jobId, { settled, limit })
    }), { discard: true }))
  yield* tick.pipe(
    Effect.tapErrorCause(Effect.logWarning),
    Effect.ignore,
    Effect.repeat(Schedule.spaced(progressEvery)),
    Effect.forkScoped
  )

  return {
    execute,
    cancel,
    rate: (jobId: string) => rates.get(jobId)?.rate(now()) ?? 0,
    resumeUnfinished,
    runChunk,
    start,
    finish
  } satisfies Runner
})

const backoff = (attempt: number) => Duration.seconds(Math.min(60, 2 ** attempt))

const chunkWithRetry = (runner: Runner, jobId: string, chunk: number) =>
  Effect.gen(function*() {
    for (let attempt = 1; ; attempt++) {
      const result = yield* Activity.make({
        name: `chunk/${chunk}/${attempt}`,
        success: ChunkOutcome,
        error: ChunkFailed,
        execute: runner.runChunk(jobId, chunk)
      }).pipe(Effect.either)
      if (Either.isRight(result)) return result.right
      if (attempt >= chunkAttempts) return "failed" as const
      // A persisted timer even for short waits (the default keeps waits under a minute in memory):
      // a service restarted during the backoff wakes the chunk when it was due, not a full backoff later.
      yield* DurableClock.sleep({ name: `chunk/${chunk}/backoff/${attempt}`, duration: backoff(attempt), inMemoryThreshold: Duration.zero })
    }
  })

const workflowLayer = BatchJob.toLayer(({ jobId }) =>
  Effect.gen(function*() {
    const runner = yield* JobRunner
    const total = yield* Activity.make({ name: "start", success: Schema.Number, error: ChunkFailed, execute: runner.start(jobId) }).pipe(
      Effect.orElseSucceed(() => -2)
    )
    const chunks = total < 0 ? [] : Array.from({ length: Math.ceil(total / chunkSize) }, (_, i) => i)
    const outcomes = yield* Effect.forEach(chunks, (chunk) => chunkWithRetry(runner, jobId, chunk), { concurrency: chunksInFlight })
    return yield* Activity.make({
      name: "finish",
      success: Schema.String,
      error: ChunkFailed,
      execute: runner.finish(jobId, total === -1 ? ["cancelled"] : total === -2 ? ["failed"] : outcomes)
    }).pipe(Effect.orElseSucceed(() => "failed"))
  })
)

/**
 * The runner and the workflow it executes. Needs a `WorkflowEngine` (e.g.
 * `ClusterWorkflowEngine.layer` on `SingleRunner`) and an `HttpClient`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  JobRunner,
  never,
  JobStore.JobStore | JobEvents.JobEvents | ProviderProfiles.ProviderProfiles | HttpClient.HttpClient | WorkflowEngine.WorkflowEngine
> = workflowLayer.pipe(Layer.provideMerge(Layer.scoped(JobRunner, make)))
