/**
 * The workflow alone, on the in-memory engine with steps that record what
 * they were asked: the order of the steps (without a start step when the
 * payload gives the round's total), what a start that finds the job
 * cancelled or that fails leads to, and a chunk retried after a durable
 * backoff (on the TestClock); and, on the cluster engine the service runs,
 * that an execution started again keeps the payload it was started with.
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import * as SingleRunner from "@effect/cluster/SingleRunner"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Layer, Schedule } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as JobWorkflow from "../../src/service/JobWorkflow.js"
import { runOnTestClock } from "../support/TestTime.js"

interface Recorded {
  readonly calls: Array<string>
  finished: ReadonlyArray<JobWorkflow.ChunkOutcome> | undefined
}

/** Steps whose start answers `start`, and whose chunk `failing` fails its first `failures` attempts. */
const recording = (
  start: Effect.Effect<JobWorkflow.Started, JobWorkflow.ChunkFailed>,
  options: { readonly failing?: number, readonly failures?: number } = {}
) => {
  const recorded: Recorded = { calls: [], finished: undefined }
  let failuresLeft = options.failures ?? 0
  const steps: JobWorkflow.Steps = {
    start: (jobId) => Effect.zipRight(Effect.map(Clock.currentTimeMillis, (t) => recorded.calls.push(`start ${jobId} at ${t}`)), start),
    runChunk: (_, chunk, size) =>
      Effect.flatMap(Clock.currentTimeMillis, (t) => {
        recorded.calls.push(size === JobWorkflow.legacyChunkSize ? `chunk ${chunk} at ${t}` : `chunk ${chunk} of ${size} at ${t}`)
        return chunk === options.failing && failuresLeft-- > 0
          ? Effect.fail(new JobWorkflow.ChunkFailed({ message: "database is locked" }))
          : Effect.succeed("done" as const)
      }),
    runBatch: () =>
      Effect.flatMap(Clock.currentTimeMillis, (t) => {
        recorded.calls.push(`batch at ${t}`)
        return options.failing === -1 && failuresLeft-- > 0
          ? Effect.fail(new JobWorkflow.ChunkFailed({ message: "provider unreachable" }))
          : Effect.succeed("done" as const)
      }),
    finish: (_, outcomes) =>
      Effect.sync(() => {
        recorded.finished = outcomes
        return outcomes.includes("cancelled") ? "cancelled" : outcomes.includes("failed") ? "failed" : "finished"
      })
  }
  const layer = JobWorkflow.layer.pipe(
    Layer.provideMerge(WorkflowEngine.layerMemory),
    Layer.provide(Layer.succeed(JobWorkflow.JobSteps, steps))
  )
  return { recorded, layer }
}

const run = (jobId: string) => JobWorkflow.BatchJob.execute({ jobId, round: 0 })

describe("JobWorkflow.BatchJob", () => {
  it.effect("given the round's total and chunk size (as the runner starts executions), no start step: the chunks, then finish", () => {
    const { layer, recorded } = recording(Effect.dieMessage("no start step was expected"))
    return Effect.gen(function*() {
      const total = 2 * 40 + 1
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_g", round: 0, total, chunkSize: 40 })).toBe("finished")
      expect([...recorded.calls].sort()).toEqual(["chunk 0 of 40 at 0", "chunk 1 of 40 at 0", "chunk 2 of 40 at 0"])
      expect(recorded.finished).toEqual(["done", "done", "done"])
    }).pipe(Effect.provide(layer))
  })

  // Which activity the finish ran in the memory engine does not show: the cluster-engine test below checks that.
  it.effect("with finishInStep, a round of one chunk and one of several run their chunks once and finish once", () => {
    const one = recording(Effect.dieMessage("no start step was expected"))
    const several = recording(Effect.dieMessage("no start step was expected"))
    return Effect.gen(function*() {
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_v", round: 0, total: 40, chunkSize: 40, finishInStep: true }).pipe(
        Effect.provide(one.layer)
      )).toBe("finished")
      expect(one.recorded.calls).toEqual(["chunk 0 of 40 at 0"])
      expect(one.recorded.finished).toEqual(["done"])
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_w", round: 0, total: 41, chunkSize: 40, finishInStep: true }).pipe(
        Effect.provide(several.layer)
      )).toBe("finished")
      expect([...several.recorded.calls].sort()).toEqual(["chunk 0 of 40 at 0", "chunk 1 of 40 at 0"])
      expect(several.recorded.finished).toEqual(["done", "done"])
    })
  })

  it.effect("a one-step round whose finish fails keeps its step's outcome: the step does not run again, the finish does", () => {
    const calls: Array<string> = []
    let finishFailures = 1
    const steps: JobWorkflow.Steps = {
      start: () => Effect.dieMessage("no start step was expected"),
      // Stopped (a soft limit): run again, its items all settled, it would say done, and the job would read finished.
      runChunk: (_, chunk) => Effect.as(Effect.sync(() => calls.push(`chunk ${chunk}`)), "stopped" as const),
      runBatch: () => Effect.dieMessage("no batch step was expected"),
      finish: (_, outcomes) =>
        Effect.suspend(() => {
          calls.push(`finish ${outcomes.join(",")}`)
          return finishFailures-- > 0 ? Effect.fail(new JobWorkflow.ChunkFailed({ message: "database is locked" })) : Effect.succeed("stopped" as const)
        })
    }
    const layer = JobWorkflow.layer.pipe(
      Layer.provideMerge(WorkflowEngine.layerMemory),
      Layer.provide(Layer.succeed(JobWorkflow.JobSteps, steps))
    )
    return Effect.gen(function*() {
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_x", round: 0, total: 3, chunkSize: 40, finishInStep: true })).toBe("stopped")
      expect(calls).toEqual(["chunk 0", "finish stopped", "finish stopped"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a one-step round whose step fails chunkAttempts times finishes failed, in a finish of its own", () => {
    const { layer, recorded } = recording(Effect.dieMessage("no start step was expected"), { failing: 0, failures: JobWorkflow.chunkAttempts })
    return Effect.gen(function*() {
      const execution = JobWorkflow.BatchJob.execute({ jobId: "job_y", round: 0, total: 3, chunkSize: 40, finishInStep: true })
      expect(yield* runOnTestClock(execution.pipe(Effect.provide(layer)), "1 minute")).toBe("failed")
      expect(recorded.calls).toEqual(["chunk 0 of 40 at 0", "chunk 0 of 40 at 2000", "chunk 0 of 40 at 6000", "chunk 0 of 40 at 14000", "chunk 0 of 40 at 30000"])
      expect(recorded.finished).toEqual(["failed"])
    })
  })

  it.effect("a batch-mode round started with finishInStep finishes in its batch step, retried with the same backoff", () => {
    const { layer, recorded } = recording(Effect.dieMessage("no start step was expected"), { failing: -1, failures: 1 })
    return Effect.gen(function*() {
      const execution = JobWorkflow.BatchJob.execute({ jobId: "job_z", round: 0, total: 500, mode: "batch", chunkSize: 40, finishInStep: true })
      expect(yield* runOnTestClock(execution.pipe(Effect.provide(layer)), "1 second", 100)).toBe("finished")
      expect(recorded.calls).toEqual(["batch at 0", "batch at 2000"])
      expect(recorded.finished).toEqual(["done"])
    })
  })

  it.effect("given a total but no chunk size (started by an older effect-batch): chunks of legacyChunkSize, the ranges journaled", () => {
    const { layer, recorded } = recording(Effect.dieMessage("no start step was expected"))
    return Effect.gen(function*() {
      const total = JobWorkflow.legacyChunkSize + 1
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_i", round: 0, total })).toBe("finished")
      expect([...recorded.calls].sort()).toEqual(["chunk 0 at 0", "chunk 1 at 0"])
      expect(recorded.finished).toEqual(["done", "done"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("given the total and batch mode, no start step: one batch step for the whole job", () => {
    const { layer, recorded } = recording(Effect.dieMessage("no start step was expected"))
    return Effect.gen(function*() {
      expect(yield* JobWorkflow.BatchJob.execute({ jobId: "job_h", round: 0, total: 3, mode: "batch" })).toBe("finished")
      expect(recorded.calls).toEqual(["batch at 0"])
      expect(recorded.finished).toEqual(["done"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("started without a total (journaled by an older effect-batch): start, then one chunk per legacyChunkSize items, then finish", () => {
    const { layer, recorded } = recording(Effect.succeed({ _tag: "Started", total: 2 * JobWorkflow.legacyChunkSize + 1 }))
    return Effect.gen(function*() {
      expect(yield* run("job_a")).toBe("finished")
      expect([...recorded.calls].sort()).toEqual(["chunk 0 at 0", "chunk 1 at 0", "chunk 2 at 0", "start job_a at 0"])
      expect(recorded.finished).toEqual(["done", "done", "done"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a batch-mode start runs one batch step for the whole job, retried with the same backoff, and no chunk", () => {
    const { layer, recorded } = recording(Effect.succeed({ _tag: "Started", total: 3 * JobWorkflow.legacyChunkSize, mode: "batch" }), {
      failing: -1,
      failures: 1
    })
    return Effect.gen(function*() {
      expect(yield* runOnTestClock(run("job_f").pipe(Effect.provide(layer)), "1 second", 100)).toBe("finished")
      expect(recorded.calls).toEqual(["start job_f at 0", "batch at 0", "batch at 2000"])
      expect(recorded.finished).toEqual(["done"])
    })
  })

  it.effect("a job cancelled before it started runs no chunk and finishes cancelled", () => {
    const { layer, recorded } = recording(Effect.succeed({ _tag: "Cancelled" }))
    return Effect.gen(function*() {
      expect(yield* run("job_b")).toBe("cancelled")
      expect(recorded.calls).toEqual(["start job_b at 0"])
      expect(recorded.finished).toEqual(["cancelled"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a start that fails runs no chunk and finishes failed", () => {
    const { layer, recorded } = recording(Effect.fail(new JobWorkflow.ChunkFailed({ message: "database is locked" })))
    return Effect.gen(function*() {
      expect(yield* run("job_c")).toBe("failed")
      expect(recorded.calls).toEqual(["start job_c at 0"])
      expect(recorded.finished).toEqual(["failed"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a chunk that fails is retried after 2 s, then 4 s; after chunkAttempts failures it counts as failed", () => {
    const retried = recording(Effect.succeed({ _tag: "Started", total: 1 }), { failing: 0, failures: 2 })
    const exhausted = recording(Effect.succeed({ _tag: "Started", total: 1 }), { failing: 0, failures: JobWorkflow.chunkAttempts })
    return Effect.gen(function*() {
      expect(yield* runOnTestClock(run("job_d").pipe(Effect.provide(retried.layer)), "1 second", 100)).toBe("finished")
      expect(retried.recorded.calls).toEqual(["start job_d at 0", "chunk 0 at 0", "chunk 0 at 2000", "chunk 0 at 6000"])
      expect(retried.recorded.finished).toEqual(["done"])

      expect(yield* runOnTestClock(run("job_e").pipe(Effect.provide(exhausted.layer)), "1 minute")).toBe("failed")
      expect(exhausted.recorded.calls.filter((c) => c.startsWith("chunk 0"))).toHaveLength(JobWorkflow.chunkAttempts)
      expect(exhausted.recorded.finished).toEqual(["failed"])
    })
  })
})

// The chunk size lives in the payload, so a running execution must keep the one it was started with: when an
// upgraded service starts again, the engine resumes the execution with the payload it journaled (and the runner's
// start of its unfinished jobs is a duplicate), so the chunks in its journal go on covering the items they covered.
/** A service process's engine: the cluster's, as the service runs it, on the SQLite file of `dir`, with `steps`. */
const clusterEngine = (dir: string, steps: JobWorkflow.Steps) =>
  JobWorkflow.layer.pipe(
    Layer.provideMerge(ClusterWorkflowEngine.layer),
    Layer.provideMerge(SingleRunner.layer({
      runnerStorage: "memory",
      shardingConfig: { entityMessagePollInterval: "100 millis", entityTerminationTimeout: "100 millis" }
    })),
    Layer.provide(SqliteClient.layer({ filename: join(dir, "engine.db") })),
    Layer.provide(Layer.succeed(JobWorkflow.JobSteps, steps))
  )

describe("JobWorkflow.BatchJob on the cluster engine", () => {
  it.live("an execution resumed by a service that sends another chunk size keeps the size it was started with", () => {
    const dir = mkdtempSync(join(tmpdir(), "effect-batch-workflow-"))
    const total = JobWorkflow.legacyChunkSize + 1
    /** A service process whose chunks record their size. */
    const service = (chunk: Effect.Effect<JobWorkflow.ChunkOutcome>) => {
      const sizes: Array<string> = []
      const steps: JobWorkflow.Steps = {
        start: () => Effect.dieMessage("no start step was expected"),
        runChunk: (_, index, size) => Effect.zipRight(Effect.sync(() => sizes.push(`${index} of ${size}`)), chunk),
        runBatch: () => Effect.dieMessage("no batch step was expected"),
        finish: (_, outcomes) => Effect.succeed(outcomes.every((o) => o === "done") ? "finished" : "failed")
      }
      return { sizes, layer: clusterEngine(dir, steps) }
    }
    return Effect.gen(function*() {
      // Started as an older effect-batch started it (no chunk size: chunks of legacyChunkSize), stopped mid-chunk.
      const before = service(Effect.never)
      yield* Effect.gen(function*() {
        yield* JobWorkflow.BatchJob.execute({ jobId: "job_u", round: 0, total }, { discard: true })
        yield* Effect.repeat(Effect.sync(() => before.sizes.length), { schedule: Schedule.spaced("20 millis"), until: (n) => n === 2 })
      }).pipe(Effect.provide(before.layer))
      expect([...before.sizes].sort()).toEqual([`0 of ${JobWorkflow.legacyChunkSize}`, `1 of ${JobWorkflow.legacyChunkSize}`])
      // The upgraded service: it resumes the execution, and starts it again with the size it sends now.
      const after = service(Effect.succeed("done"))
      const result = yield* JobWorkflow.BatchJob.execute({ jobId: "job_u", round: 0, total, chunkSize: JobWorkflow.chunkSize }).pipe(
        Effect.provide(after.layer)
      )
      expect(result).toBe("finished")
      expect([...after.sizes].sort()).toEqual([`0 of ${JobWorkflow.legacyChunkSize}`, `1 of ${JobWorkflow.legacyChunkSize}`])
    }).pipe(Effect.timeout("30 seconds"), Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  })

  it.live("executions running at once each run their own job's steps, though their activities share names", () => {
    const dir = mkdtempSync(join(tmpdir(), "effect-batch-workflow-"))
    const calls: Array<string> = []
    const steps: JobWorkflow.Steps = {
      start: () => Effect.dieMessage("no start step was expected"),
      // Each chunk waits, so that the executions' chunks of the same name are in flight together.
      runChunk: (jobId, chunk, size) =>
        Effect.as(Effect.zipRight(Effect.sleep("50 millis"), Effect.sync(() => calls.push(`${jobId} chunk ${chunk} of ${size}`))), "done"),
      runBatch: (jobId) => Effect.as(Effect.sync(() => calls.push(`${jobId} batch`)), "done"),
      finish: (jobId, outcomes) => Effect.as(Effect.sync(() => calls.push(`${jobId} finish after ${outcomes.length}`)), "finished")
    }
    const jobs = [{ jobId: "job_p", total: 1 }, { jobId: "job_q", total: 2 * 40 + 1 }, { jobId: "job_r", total: 3 * 40 }]
    return Effect.gen(function*() {
      const results = yield* Effect.forEach(
        jobs,
        ({ jobId, total }) => JobWorkflow.BatchJob.execute({ jobId, round: 0, total, chunkSize: 40, finishInStep: true }),
        { concurrency: "unbounded" }
      )
      expect(results).toEqual(["finished", "finished", "finished"])
      yield* JobWorkflow.BatchJob.execute({ jobId: "job_s", round: 0, total: 5, mode: "batch", chunkSize: 40, finishInStep: true })
      const of = (jobId: string) => calls.filter((call) => call.startsWith(`${jobId} `)).sort()
      expect(of("job_p")).toEqual(["job_p chunk 0 of 40", "job_p finish after 1"])
      expect(of("job_q")).toEqual(["job_q chunk 0 of 40", "job_q chunk 1 of 40", "job_q chunk 2 of 40", "job_q finish after 3"])
      expect(of("job_r")).toEqual(["job_r chunk 0 of 40", "job_r chunk 1 of 40", "job_r chunk 2 of 40", "job_r finish after 3"])
      expect(of("job_s")).toEqual(["job_s batch", "job_s finish after 1"])
      expect(calls).toHaveLength(12)
    }).pipe(
      Effect.provide(clusterEngine(dir, steps)),
      Effect.timeout("30 seconds"),
      Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    )
  })

  it.live("a one-step round stopped mid-step runs its step again when resumed, then finishes once, in one activity", () => {
    const dir = mkdtempSync(join(tmpdir(), "effect-batch-workflow-"))
    /** A service process whose steps record their calls. */
    const service = (chunk: Effect.Effect<JobWorkflow.ChunkOutcome>) => {
      const calls: Array<string> = []
      const steps: JobWorkflow.Steps = {
        start: () => Effect.dieMessage("no start step was expected"),
        runChunk: (_, index) => Effect.zipRight(Effect.sync(() => calls.push(`chunk ${index}`)), chunk),
        runBatch: () => Effect.dieMessage("no batch step was expected"),
        finish: (_, outcomes) => Effect.as(Effect.sync(() => calls.push(`finish ${outcomes.join(",")}`)), "finished" as const)
      }
      return { calls, layer: clusterEngine(dir, steps) }
    }
    const payload = { jobId: "job_t", round: 0, total: 3, chunkSize: 40, finishInStep: true }
    return Effect.gen(function*() {
      const before = service(Effect.never)
      yield* Effect.gen(function*() {
        yield* JobWorkflow.BatchJob.execute(payload, { discard: true })
        yield* Effect.repeat(Effect.sync(() => before.calls.length), { schedule: Schedule.spaced("20 millis"), until: (n) => n === 1 })
      }).pipe(Effect.provide(before.layer))
      expect(before.calls).toEqual(["chunk 0"])
      const after = service(Effect.succeed("done"))
      expect(yield* JobWorkflow.BatchJob.execute(payload).pipe(Effect.provide(after.layer))).toBe("finished")
      expect(after.calls).toEqual(["chunk 0", "finish done"])
      // The activities the engine stored: the step's (run again from its own message), and no finish of its own.
      const rows = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ tag: string, payload: string }>`SELECT tag, payload FROM cluster_messages ORDER BY id`).pipe(
        Effect.provide(SqliteClient.layer({ filename: join(dir, "engine.db") }))
      )
      const activities = rows.filter((row) => row.tag === "activity").map((row) => (JSON.parse(row.payload) as { name: string }).name)
      expect(activities).toEqual(["chunk/0+finish/1"])
    }).pipe(Effect.timeout("30 seconds"), Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  })
})
