/**
 * Jobs in `batch` mode through the job API in-process, against the
 * simulator's batch API (real sockets, real time; the simulator's batches
 * end in about a second): a job runs to finished through provider batches,
 * its results in input order and priced at the batch discount; cancel
 * cancels its batches; fields that shape live calls are refused.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as Job from "../../src/service/Job.js"
import { client, keyA, layer as serviceLayer, Sim, waitFor } from "../support/JobServiceTest.js"

const prompts = (n: number, tag: string) => Array.from({ length: n }, (_, i) => (i === 3 ? `INVALID ${tag} ${i}` : `${tag} ${i}: tell me something`))

const fast = { batches: { validateMs: 200, linesPerSecond: 200, finalizeMs: 100, fileProcessingMs: 50 } }

describe("job API, batch mode", () => {
  const files = { "mixed.jsonl": "\"first\"\n{not json\n\"third\"\n" }
  layer(serviceLayer({ simulator: fast, files }), { excludeTestServices: true })("batch jobs", (it) => {
    it.effect("a batch job runs to finished through the provider's batches: results in order, each its own, at half the price", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        const before = yield* sim.metrics
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(150, "batch"), mode: "batch" }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the batch job to end")
        expect(job).toMatchObject({ state: "finished", mode: "batch", counts: { total: 150, succeeded: 149, failed: 1, pending: 0 } })
        const after = yield* sim.metrics
        // No live call: one provider batch for the job's 150 lines.
        expect(after.received - before.received).toBe(0)
        expect(after.batches.created - before.batches.created).toBe(1)
        expect(after.batches.linesBilled - before.batches.linesBilled).toBe(149)
        const lines = (yield* api.jobs.results({ path: { id }, urlParams: {} })).split("\n").filter((l) => l !== "")
          .map((l) => JSON.parse(l) as { index: number, status: string, output?: { content: string } })
        expect(lines.map((l) => l.index)).toEqual(Array.from({ length: 150 }, (_, i) => i))
        for (const l of lines) if (l.status === "succeeded") expect(l.output?.content).toContain(`batch ${l.index}:`)
        const { items } = yield* api.jobs.deadLetters({ path: { id } })
        expect(items.map((d) => [d.index, d.errorClass])).toEqual([[3, "Permanent"]])
        const { shards } = yield* api.jobs.shards({ path: { id } })
        expect(shards).toMatchObject([{ key: "0/0", round: 0, model: "sim-chat", lines: 150, state: "ingested", cancelled: false, again: 0 }])
        expect(shards[0]!.batch).toMatch(/^batch_sim_/)
        // A live run of the same prompts costs twice as much.
        const live = yield* api.jobs.submit({ payload: { items: prompts(150, "batch") }, headers: {} })
        const liveJob = yield* waitFor(api.jobs.get({ path: { id: live.id } }), (j) => Job.isTerminal(j.state), "the live job to end")
        expect(liveJob.mode).toBeUndefined()
        expect((yield* api.jobs.shards({ path: { id: live.id } })).shards).toEqual([])
        expect(job.cost).toBeCloseTo(liveJob.cost / 2, 10)
      }))

    it.effect("a file's rejected line fails on arrival and is never sent in a batch", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        const before = (yield* sim.metrics).batches
        const { id, rejected } = yield* api.jobs.submit({ payload: { file: "mixed.jsonl", mode: "batch" }, headers: {} })
        expect(rejected).toBe(1)
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        expect(job).toMatchObject({ state: "finished", counts: { total: 3, succeeded: 2, failed: 1 } })
        const after = (yield* sim.metrics).batches
        expect([after.created - before.created, after.linesBilled - before.linesBilled]).toEqual([1, 2])
      }))

    it.effect("cancel cancels a batch job's batches at the provider; the job ends cancelled", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        yield* sim.configure({ batches: { linesPerSecond: 5 } })
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(100, "cancel"), mode: "batch" }, headers: {} })
        yield* waitFor(sim.metrics, (m) => m.batches.created > 0, "the job's batch to be created")
        yield* api.jobs.cancel({ path: { id } })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        expect(job.state).toBe("cancelled")
        yield* sim.configure({ batches: { linesPerSecond: 200 } })
      }))

    it.effect("fields that shape live calls are refused for a batch job, naming the field", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        for (const [field, payload] of [
          ["maxAttempts", { maxAttempts: 3 }],
          ["itemTimeout", { itemTimeout: 5 }],
          ["priority", { priority: 2 }]
        ] as const) {
          const error = yield* Effect.flip(api.jobs.submit({ payload: { items: ["x"], mode: "batch", ...payload }, headers: {} }))
          expect(error).toMatchObject({ _tag: "InvalidJob", field, message: `${field} shapes live calls, and a batch job makes none` })
        }
      }))
  })
})
