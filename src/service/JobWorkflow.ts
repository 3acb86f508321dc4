/**
 * The durable part of running a job: the `@effect/workflow` definition of one
 * round of a job (`BatchJob`) and its body — start, the chunks of
 * `chunkSize` items (each an activity, `chunksInFlight` at once, retried with
 * a durable backoff) or, for a job in `batch` mode, one activity that runs
 * the whole job through the provider's batch API, finish. What each step does is the `JobRunner`'s: the
 * workflow only decides their order, what is journaled, and what a failure
 * means.
 *
 * - Idempotent: the execution id derives from the job id and round, so
 *   starting an execution twice yields the same one.
 * - Durable: the engine journals every finished activity and resumes
 *   unfinished executions when the service starts again; a step runs again
 *   only if it had not finished (at least once, never exactly once).
 * - Job-level retry: a chunk that fails as a whole (storage error, defect) is
 *   retried up to `chunkAttempts` times, waiting with `DurableClock` (so the
 *   backoff survives a restart), and then counts as `failed`.
 * - Started with the round's `total` (and `mode`), as the runner starts every
 *   execution now, the body has no start step: each chunk (or the batch step)
 *   moves the job to running as it begins, and finds a job cancelled before
 *   it started. An execution started without them (journaled by an older
 *   effect-batch) runs the start step: one that fails (a storage error)
 *   fails the round, going straight to finish with `failed`, and a job
 *   cancelled before it started goes straight to finish with `cancelled`.
 * - The chunk size is the payload's too: an execution started without one
 *   (journaled by an older effect-batch) keeps chunks of `legacyChunkSize`,
 *   so that the chunks its journal holds cover the items they covered.
 * - A round of one step (one chunk, or batch mode) started with
 *   `finishInStep` finishes in that step's activity: one durable round trip
 *   fewer per job. If its finish fails, the step's outcome is journaled all
 *   the same and the finish runs as an activity of its own, as it does for a
 *   round of several chunks.
 *
 * What it does not promise: activities are not interruptible by the engine
 * (a cancel is the runner's signal), and nothing here reads or writes the
 * `JobStore` itself.
 *
 * @since 0.1.0
 */
import * as Activity from "@effect/workflow/Activity"
import * as DurableClock from "@effect/workflow/DurableClock"
import * as Workflow from "@effect/workflow/Workflow"
import type * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Job from "./Job.js"

/**
 * Items per chunk activity of an execution the runner starts (it sends the
 * size in the payload). Each activity costs about 1 100 fiber steps, a
 * handful of statements and two transactions whatever its size: 250 rather
 * than 100 made 3.5–8 % fewer fiber steps per item in the jobs bench. A
 * chunk holds the inputs of its pending items in memory while it runs
 * (`chunksInFlight` per job).
 *
 * @since 0.1.0
 * @category constants
 */
export const chunkSize = 250

/**
 * The items of a chunk of an execution started without a size in its
 * payload (journaled by an older effect-batch): its chunks' names mean
 * ranges of this many items.
 *
 * @since 0.1.0
 * @category constants
 */
export const legacyChunkSize = 100

/**
 * Chunks of one job in flight at once: the next starts while the previous
 * one's slowest items finish.
 *
 * @since 0.1.0
 * @category constants
 */
export const chunksInFlight = 2

/**
 * Attempts per chunk before it counts as failed (and so the job).
 *
 * @since 0.1.0
 * @category constants
 */
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
 * How the start of a round ended: the job is running with `total` items, or
 * it was cancelled before it started.
 *
 * @since 0.1.0
 * @category models
 */
export const Started = Schema.Union(
  // `mode` is absent from what was journaled before batch jobs: those ran live.
  Schema.TaggedStruct("Started", { total: Schema.Int, mode: Schema.optional(Schema.Literal("batch")) }),
  Schema.TaggedStruct("Cancelled", {})
)

/**
 * @since 0.1.0
 * @category models
 */
export type Started = typeof Started.Type

/**
 * A step that could not run (a chunk's failure is retried with backoff).
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
  // `total` and `mode`, fixed for a round, let the body skip the start step (each step begins the job itself);
  // an execution started without them (journaled before they were sent) runs its start step as it always did.
  // `chunkSize` likewise: without it (journaled before it was sent), chunk n is the n-th range of legacyChunkSize.
  payload: {
    jobId: Schema.String,
    round: Schema.Int,
    total: Schema.optional(Schema.Int),
    mode: Schema.optional(Schema.Literal("batch")),
    chunkSize: Schema.optional(Schema.Int.pipe(Schema.positive())),
    // Absent from what was journaled before it: such an execution keeps its finish as an activity of its own.
    finishInStep: Schema.optional(Schema.Boolean)
  },
  success: Schema.String,
  idempotencyKey: ({ jobId, round }) => `${jobId}/${round}`
})

/**
 * What the workflow's steps do, given by the runner (`JobRunner.layer`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Steps {
  /** Moves the job to running (the step of an execution started without `total`). */
  readonly start: (jobId: string) => Effect.Effect<Started, ChunkFailed>
  /**
   * Runs the items of chunk `chunk` (items `chunk × size` to `(chunk + 1) × size`, excluded) still pending, moving
   * the job to running first if it is queued; `cancelled` if it is.
   */
  readonly runChunk: (jobId: string, chunk: number, size: number) => Effect.Effect<ChunkOutcome, ChunkFailed>
  /**
   * Runs every item still pending through the provider's batch API, re-attaching to the batches a crashed attempt
   * left; moves the job to running first as `runChunk` does.
   */
  readonly runBatch: (jobId: string) => Effect.Effect<ChunkOutcome, ChunkFailed>
  /** Decides and records the final state. */
  readonly finish: (jobId: string, outcomes: ReadonlyArray<ChunkOutcome>) => Effect.Effect<Job.JobState, ChunkFailed>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class JobSteps extends Context.Tag("effect-batch/JobWorkflow/Steps")<JobSteps, Steps>() {}

const backoff = (attempt: number) => Duration.seconds(Math.min(60, 2 ** attempt))

/** The effect an activity of the body runs, given in its context: the activity itself is made once per name. */
class StepToRun extends Context.Tag("effect-batch/JobWorkflow/StepToRun")<StepToRun, Effect.Effect<unknown, ChunkFailed>>() {}

/**
 * Activities by name, kept so that each is made once per process, not once per execution: an activity's `Exit`
 * schema is built by `Activity.make`, and Schema memoizes a parser per schema, so a fresh activity built its
 * decoder afresh (about 0.7–2.6 ms on this machine, against a few µs once built) at every step of every job.
 * Only the first names are kept (chunk numbers and attempts make more of them as jobs grow); any other is made
 * afresh, as before.
 */
const activities = new Map<string, Activity.Any>()
const activitiesKept = 2_048

/** Runs `step` as the activity `name`, whose result `success` journals (a name kept with another schema is made afresh). */
const runActivity = <S extends Schema.Schema.AnyNoContext>(name: string, success: S, step: Effect.Effect<S["Type"], ChunkFailed>) => {
  let activity = activities.get(name) as Activity.Activity<S, typeof ChunkFailed, StepToRun> | undefined
  if (activity === undefined || activity.successSchema !== success) {
    activity = Activity.make({ name, success, error: ChunkFailed, execute: Effect.flatten(StepToRun) })
    if (activities.size < activitiesKept) activities.set(name, activity)
  }
  return Effect.provideService(activity, StepToRun, step)
}

/**
 * How the activity of a round's only step ended, when it finishes the round too: the job's final state, or, when
 * the finish failed, the step's outcome (the finish then runs as an activity of its own).
 */
const StepEnded = Schema.Union(
  Schema.TaggedStruct("Finished", { state: Schema.String }),
  Schema.TaggedStruct("NotFinished", { outcome: ChunkOutcome })
)

/**
 * Runs `step` as activities named `<name>/<attempt>`, whose result `success` journals, retried with a durable
 * backoff; `exhausted` after `chunkAttempts`.
 */
const withRetry = <S extends Schema.Schema.AnyNoContext>(
  name: string,
  success: S,
  step: Effect.Effect<S["Type"], ChunkFailed>,
  exhausted: S["Type"]
): Effect.Effect<S["Type"], never, WorkflowEngine.WorkflowEngine | WorkflowEngine.WorkflowInstance> =>
  Effect.gen(function*() {
    for (let attempt = 1; ; attempt++) {
      const result = yield* runActivity(`${name}/${attempt}`, success, step).pipe(Effect.either)
      if (Either.isRight(result)) return result.right
      if (attempt >= chunkAttempts) return exhausted
      // A persisted timer even for short waits (the default keeps waits under a minute in memory):
      // a service restarted during the backoff wakes the chunk when it was due, not a full backoff later.
      yield* DurableClock.sleep({ name: `${name}/backoff/${attempt}`, duration: backoff(attempt), inMemoryThreshold: Duration.zero })
    }
  })

/**
 * The workflow's body, registered with the engine in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<never, never, WorkflowEngine.WorkflowEngine | JobSteps> = BatchJob.toLayer((payload) =>
  Effect.gen(function*() {
    const { jobId, mode, total } = payload
    const size = payload.chunkSize ?? legacyChunkSize
    const steps = yield* JobSteps
    // Given total and mode, the steps begin the job themselves: one activity fewer per job (each is a durable
    // round trip to the workflow's entity, about 900 fiber steps and two transactions).
    // Named start/2: its result was a number (−1 for cancelled) before it was a tagged value, and an
    // execution journaled then must run this step again rather than misread that number.
    const started = total !== undefined
      ? Either.right<Started>(mode === "batch" ? { _tag: "Started", total, mode } : { _tag: "Started", total })
      : yield* runActivity("start/2", Started, steps.start(jobId)).pipe(Effect.either)
    const begun = Either.isRight(started) && started.right._tag === "Started" ? started.right : undefined
    const chunks = begun === undefined ? 0 : Math.ceil(begun.total / size)
    const batch = begun?.mode === "batch"
    // One activity for a batch-mode job: the provider's batches are its shards, re-attached to if it runs again.
    const stepOf = (chunk: number) => batch ? steps.runBatch(jobId) : steps.runChunk(jobId, chunk, size)
    const nameOf = (chunk: number) => batch ? "batch" : `chunk/${chunk}`
    let outcomes: ReadonlyArray<ChunkOutcome>
    if (begun === undefined) outcomes = [Either.isLeft(started) ? "failed" : "cancelled"]
    else if (payload.finishInStep === true && (batch || chunks === 1)) {
      // The round's only step finishes it in the same activity (under another name than a step that does not).
      const ended = yield* withRetry(
        `${nameOf(0)}+finish`,
        StepEnded,
        Effect.flatMap(stepOf(0), (outcome) =>
          steps.finish(jobId, [outcome]).pipe(
            Effect.map((state): typeof StepEnded.Type => ({ _tag: "Finished", state })),
            Effect.orElseSucceed((): typeof StepEnded.Type => ({ _tag: "NotFinished", outcome }))
          )),
        { _tag: "NotFinished", outcome: "failed" }
      )
      if (ended._tag === "Finished") return ended.state
      outcomes = [ended.outcome]
    } else {
      outcomes = yield* Effect.forEach(
        Array.from({ length: batch ? 1 : chunks }, (_, i) => i),
        (chunk) => withRetry(nameOf(chunk), ChunkOutcome, stepOf(chunk), "failed"),
        { concurrency: chunksInFlight }
      )
    }
    return yield* runActivity("finish", Schema.String, steps.finish(jobId, outcomes)).pipe(Effect.orElseSucceed(() => "failed"))
  })
)
