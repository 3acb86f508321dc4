/**
 * Job-level retry: a chunk that fails as a whole (here the store refuses to
 * list its pending items, twice) is retried after a durable backoff, and the
 * job still finishes with every item once. So is a batch-mode job whose
 * outcomes could not be stored: its run, attached again, hands them over
 * again from its checkpoint, and no batch is created twice.
 */
import { ClusterWorkflowEngine, SingleRunner } from "@effect/cluster"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as JobEvents from "../../src/service/JobEvents.js"
import * as JobSignals from "../../src/service/JobSignals.js"
import * as JobRunner from "../../src/service/JobRunner.js"
import * as Jobs from "../../src/service/Jobs.js"
import * as JobStore from "../../src/service/JobStore.js"
import * as ProviderProfiles from "../../src/service/ProviderProfiles.js"
import * as SqlJobStore from "../../src/service/SqlJobStore.js"
import * as Simulator from "../../src/llm/Simulator.js"
import { waitFor } from "../support/JobServiceTest.js"

const locked = (operation: string) => new JobStore.JobStoreError({ operation, cause: new Error("database is locked") })

/** `pending` fails the first `failures` times it is asked. */
const flakyPending = (failures: number) =>
  Layer.effect(
    JobStore.JobStore,
    Effect.map(SqlJobStore.make, (store): JobStore.Store => {
      let left = failures
      return { ...store, pending: (id, from, to) => left-- > 0 ? Effect.fail(locked("pending")) : store.pending(id, from, to) }
    })
  )

/** `recordAll` (the outcome writer's) fails the first `failures` times it is asked. */
const flakyRecord = (failures: number) =>
  Layer.effect(
    JobStore.JobStore,
    Effect.map(SqlJobStore.make, (store): JobStore.Store => {
      let left = failures
      return { ...store, recordAll: (groups, now) => left-- > 0 ? Effect.fail(locked("recordAll")) : store.recordAll(groups, now) }
    })
  )

type StoreLayer = Layer.Layer<JobStore.JobStore, JobStore.JobStoreError, SqlClient.SqlClient>

const services = (name: string, store: StoreLayer) => Layer.unwrapEffect(Effect.map(Simulator.Simulator, (sim) => {
  const dir = mkdtempSync(join(tmpdir(), "effect-batch-retry-"))
  const base = Layer.mergeAll(
    JobEvents.layer.pipe(Layer.provideMerge(store)),
    ProviderProfiles.layer([{ name: "sim", baseUrl: `${sim.url}/v1`, models: ["sim-chat"], concurrency: 4 }])
  )
  const engine = ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(SingleRunner.layer({ runnerStorage: "memory", shardingConfig: { entityMessagePollInterval: "200 millis" } }))
  )
  return Jobs.layer({ maxItems: 1000 }).pipe(
    Layer.provideMerge(JobRunner.layer.pipe(Layer.provideMerge(base), Layer.provideMerge(engine))),
    Layer.provide(JobSignals.layerLocal),
    Layer.provide(SqliteClient.layer({ filename: join(dir, `${name}.db`) })),
    // The simulator's batches end in about a second: read them often.
    Layer.provide(Layer.succeed(JobRunner.BatchPoll, Schedule.spaced("200 millis"))),
    Layer.provide(NodeHttpClient.layerUndici),
    Layer.provide(NodeContext.layer)
  )
})).pipe(Layer.provideMerge(SimulatorServer.layer({ latency: { baseMs: 10, jitter: 0 } })))

describe("job-level retry", () => {
  layer(services("chunk", flakyPending(2)), { excludeTestServices: true, timeout: 60_000 })("a chunk that fails", (it) => {
    it.effect("is retried after a backoff (2 s, then 4 s) and the job finishes with every item once", () =>
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const sim = yield* Simulator.Simulator
        const started = Date.now()
        const { id } = yield* jobs.submit("t", { items: Array.from({ length: 30 }, (_, i) => `retry ${i}`) }, undefined)
        const job = yield* waitFor(jobs.get("t", id), (j) => j.state !== "queued" && j.state !== "running", "the job to end")
        expect(job.state).toBe("finished")
        expect(job.counts).toMatchObject({ total: 30, succeeded: 30, pending: 0 })
        expect((yield* sim.metrics).received).toBe(30)
        // Two failed attempts waited 2 + 4 s before the third.
        expect(Date.now() - started).toBeGreaterThanOrEqual(6_000)
      }), { timeout: 60_000 })
  })

  layer(services("batch", flakyRecord(1)), { excludeTestServices: true, timeout: 60_000 })("a batch job whose outcomes are not stored", (it) => {
    it.effect("is retried: the run attached again hands its outcomes over again, no batch made twice, every item once", () =>
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const sim = yield* Simulator.Simulator
        const { id } = yield* jobs.submit("t", { items: Array.from({ length: 30 }, (_, i) => `batch retry ${i}`), mode: "batch" }, undefined)
        const job = yield* waitFor(jobs.get("t", id), (j) => j.state !== "queued" && j.state !== "running", "the job to end")
        expect(job.state).toBe("finished")
        expect(job.counts).toMatchObject({ total: 30, succeeded: 30, pending: 0 })
        const { batches } = yield* sim.metrics
        expect(batches).toMatchObject({ created: 1, linesBilled: 30, billedTwice: {} })
      }), { timeout: 60_000 })
  })
})
