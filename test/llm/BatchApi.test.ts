/**
 * `BatchApi.run` over `OpenAiBatch` against the simulator (real HTTP on
 * loopback, both on the `TestClock`), and over an in-memory provider for the
 * property that any sequence of line outcomes across rounds gives every item
 * exactly one result. Crashes are a provider wrapped to die at a chosen step
 * of a shard's life; the run is then started again under the same id.
 */
import { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FastCheck as fc, Layer, Option, Schedule } from "effect"
import * as Batch from "../../src/Batch.js"
import * as Budget from "../../src/Budget.js"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as BatchApi from "../../src/llm/BatchApi.js"
import * as BatchProvider from "../../src/llm/BatchProvider.js"
import type { ChatInput } from "../../src/llm/ChatRequest.js"
import { parseCustomId } from "../../src/llm/internal/batchShards.js"
import * as OpenAiBatch from "../../src/llm/OpenAiBatch.js"
import * as OpenAiCompat from "../../src/llm/OpenAiCompat.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import type * as TaskResult from "../../src/TaskResult.js"
import { eventsOf, recording } from "../support/recordingTracer.js"
import { runOnTestClock } from "../support/TestTime.js"

const prompts = (n: number, invalidEvery = 0) =>
  Array.from({ length: n }, (_, i) => invalidEvery > 0 && i % invalidEvery === invalidEvery - 1 ? `INVALID prompt ${i}` : `prompt number ${i}`)

const prices = { input: 1, output: 2 }

const fastPoll = Schedule.spaced("10 seconds")

/** The simulator, a provider on it (optionally wrapped), a memory checkpoint store. */
const harness = (options: Simulator.Options) =>
  Layer.mergeAll(SimulatorServer.layer({ latency: { baseMs: 0 }, ...options }), NodeHttpClient.layerUndici, CheckpointStore.layerMemory)

const chatRun = (
  sim: Simulator.Service,
  items: ReadonlyArray<ChatInput>,
  extra: Partial<BatchApi.Options<ChatInput, OpenAiCompat.ChatCompletion>> = {}
) =>
  BatchApi.run(items, {
    ...BatchApi.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat", prices, defaults: { max_tokens: 16 } }),
    poll: fastPoll,
    limitWait: "30 seconds",
    ...extra
  })

const withSim = <A, E>(
  options: Simulator.Options,
  f: (sim: Simulator.Service) => Effect.Effect<A, E, BatchProvider.BatchProvider | CheckpointStore.CheckpointStore | HttpClient.HttpClient>,
  wrap: (provider: BatchProvider.Service) => BatchProvider.Service = (p) => p
) =>
  Effect.gen(function*() {
    const sim = yield* Simulator.Simulator
    const provider = wrap(yield* OpenAiBatch.make({ baseUrl: `${sim.url}/v1`, fileReady: Schedule.spaced("100 millis") }))
    return yield* f(sim).pipe(Effect.provideService(BatchProvider.BatchProvider, provider))
  }).pipe(Effect.provide(harness(options)))

/** Every index 0..n-1 has exactly one result, at its place. */
const oneEach = <B, E>(results: ReadonlyArray<TaskResult.TaskResult<B, E>>, n: number) => {
  expect(results).toHaveLength(n)
  // A plain loop: forEach would skip holes, where an item has no result.
  for (let i = 0; i < n; i++) expect(results[i]?.index, `item ${i}`).toBe(i)
}

const tags = <B, E>(results: ReadonlyArray<TaskResult.TaskResult<B, E>>) => {
  const count: Record<string, number> = {}
  for (const r of results) count[r._tag] = (count[r._tag] ?? 0) + 1
  return count
}

describe("BatchApi.run against the simulator", () => {
  it.effect("250 prompts in 3 shards: each item one result, answers as live at half the price, streamed as shards end", () =>
    withSim({ batches: { validateMs: 1_000, linesPerSecond: 50 } }, (sim) =>
      Effect.gen(function*() {
        const streamed: Array<number> = []
        const { report, results } = yield* runOnTestClock(
          chatRun(sim, prompts(250, 50), {
            shard: { maxRequests: 100 },
            onResult: (r) => Effect.sync(() => void streamed.push(r.index))
          }),
          "10 seconds",
          200
        )
        oneEach(results, 250)
        expect(tags(results)).toEqual({ Succeeded: 245, Failed: 5 })
        expect(results[49]).toMatchObject({ _tag: "Failed", errorClass: "Permanent" })
        expect(results[0]).toMatchObject({ _tag: "Succeeded", source: "batch", attempts: 1 })
        expect([...streamed].sort((a, b) => a - b)).toEqual(results.map((r) => r.index))
        expect(report).toMatchObject({ items: 250, succeeded: 245, failed: 5, shards: 3, batchesCreated: 3, rounds: 1 })
        expect(report.liveCost).toBeCloseTo(report.cost * 2, 10)
        expect(report.cost).toBeGreaterThan(0)
        const metrics = (yield* sim.metrics).batches
        expect(metrics).toEqual({ uploads: 3, created: 3, linesBilled: 245, billedTwice: {} })
      })))

  it.effect("a span per shard under the caller's, its events saying where it stood: uploaded, submitted, ended, ingested", () =>
    withSim({ batches: { validateMs: 1_000, linesPerSecond: 50 } }, (sim) =>
      Effect.gen(function*() {
        const { spans, tracer } = yield* recording
        yield* runOnTestClock(
          chatRun(sim, prompts(250), { shard: { maxRequests: 100 } }).pipe(Effect.withSpan("caller"), Effect.withTracer(tracer)),
          "10 seconds",
          200
        )
        const shards = spans.filter((s) => s.name === "effect-batch.shard")
          .sort((a, b) => String(a.attributes.get("effect-batch.shard")).localeCompare(String(b.attributes.get("effect-batch.shard"))))
        expect(shards.map((s) => [s.attributes.get("effect-batch.shard"), s.attributes.get("effect-batch.lines")])).toEqual([
          ["0/0", 100],
          ["0/1", 100],
          ["0/2", 50]
        ])
        const caller = spans.find((s) => s.name === "caller")!
        for (const shard of shards) {
          expect(Option.getOrUndefined(shard.parent)).toBe(caller)
          expect(shard.attributes.get("effect-batch.model")).toBe("sim-chat")
          expect(shard.status._tag).toBe("Ended")
          const events = eventsOf(shard)
          expect(events.map(([name]) => name)).toEqual(["uploaded", "submitted", "ended", "ingested"])
          expect(events[1]![2]["effect-batch.batch"]).toMatch(/^batch_/)
          expect(events[2]![2]).toMatchObject({ "effect-batch.batch_status": "completed" })
          // Events in the test clock's order. Two may share a step: a create request still in flight on loopback
          // while the clock moves answers a step late, and the poll right after it can already see the batch ended.
          const at = events.map(([, t]) => t)
          for (let i = 1; i < at.length; i++) expect(at[i]! >= at[i - 1]!, `event ${i} after event ${i - 1}`).toBe(true)
          // The batch took test time to run (its 3 s of work need one 10 s step at least), on the test clock, not the wall's.
          expect(at[2]! >= 10_000_000_000n && at[2]! <= 2_000_000_000_000n, `ended at ${at[2]} ns`).toBe(true)
        }
      })))

  it.effect("lines a batch did not run before it expired go into the next round; every item ends answered, none paid twice", () =>
    withSim({ batches: { validateMs: 0, linesPerSecond: 1, windowMs: 40_000 } }, (sim) =>
      Effect.gen(function*() {
        const { report, results } = yield* runOnTestClock(chatRun(sim, prompts(60), { shard: { maxRequests: 60 } }), "10 seconds", 400)
        oneEach(results, 60)
        expect(tags(results)).toEqual({ Succeeded: 60 })
        expect(report.rounds).toBe(2)
        expect(report.batchesCreated).toBe(2)
        const metrics = (yield* sim.metrics).batches
        expect(metrics.linesBilled).toBe(60)
      })))

  it.effect("lines that keep failing (500s) are failed after the last round, naming why; the rest are answered", () =>
    withSim({ batches: { validateMs: 0, linesPerSecond: 1_000, lineFailureRate: 0.5 } }, (sim) =>
      Effect.gen(function*() {
        const { report, results } = yield* runOnTestClock(chatRun(sim, prompts(80), { rounds: 2 }), "10 seconds", 100)
        oneEach(results, 80)
        const failed = results.filter((r) => r._tag === "Failed")
        expect(failed.length).toBeGreaterThan(5)
        expect(failed.length).toBeLessThan(40)
        for (const f of failed) {
          expect(f).toMatchObject({ errorClass: "Transient", attempts: 2 })
          expect((f as TaskResult.Failed<Error>).error.message).toMatch(/^still failing after 2 rounds: HTTP 500/)
        }
        expect(report.rounds).toBe(2)
        expect((yield* sim.metrics).batches.linesBilled).toBe(80 - failed.length)
      })))

  it.effect("a shard refused for the model's enqueued-token limit is created again after the wait, and goes through", () =>
    withSim({ batches: { fileProcessingMs: 0, validateMs: 1_000, linesPerSecond: 1, enqueuedTokens: 400 } }, (sim) =>
      Effect.gen(function*() {
        const { report, results } = yield* runOnTestClock(chatRun(sim, prompts(60), { shard: { maxRequests: 20 } }), "10 seconds", 200)
        oneEach(results, 60)
        expect(tags(results)).toEqual({ Succeeded: 60 })
        expect(report.shards).toBe(3)
        expect(report.batchesCreated).toBeGreaterThan(3)
        expect((yield* sim.metrics).batches.linesBilled).toBe(60)
      })))

  it.effect("with queueTokens, a shard waits for room in its model's queue instead of being refused by the provider", () =>
    withSim({ batches: { fileProcessingMs: 0, validateMs: 1_000, linesPerSecond: 1, enqueuedTokens: 400 } }, (sim) =>
      Effect.gen(function*() {
        const { report, results } = yield* runOnTestClock(
          chatRun(sim, prompts(60), { shard: { maxRequests: 20 }, queueTokens: 380 }),
          "10 seconds",
          200
        )
        oneEach(results, 60)
        expect(tags(results)).toEqual({ Succeeded: 60 })
        expect(report).toMatchObject({ shards: 3, batchesCreated: 3 })
        expect((yield* sim.metrics).batches).toMatchObject({ created: 3, linesBilled: 60 })
      })))

  it("the batch discount comes from the price table (batchDiscount), else 0.5", () => {
    const usage = { prompt_tokens: 1_000_000, completion_tokens: 0, total_tokens: 1_000_000 }
    const body = { id: "c", model: "m", choices: [{ message: { content: "hi" }, finish_reason: "stop" }], usage }
    const priced = (prices: Budget.Prices) =>
      Effect.runSync(BatchApi.chat({ baseUrl: "http://x/v1", model: "m", prices }).decode(body, "p", 0)).cost
    expect(priced({ input: 1, output: 1 })).toBeCloseTo(0.5, 12)
    expect(priced({ input: 1, output: 1, batchDiscount: 0.4 })).toBeCloseTo(0.4, 12)
    const tooHigh = () => Budget.pricesWith({ m: { input: 1, output: 1, batchDiscount: 1.5 } })
    expect(tooHigh).toThrow(/batchDiscount of model "m" must be in \(0, 1\]/)
  })
})

// ---------------------------------------------------------------------------
// crashes
// ---------------------------------------------------------------------------

type Step = "upload" | "create" | "poll" | "results"

class Crash extends Error {}

/** Dies right after the `nth` call of `step` has done its work (the provider changed, the run did not record it). */
const crashAfter = (step: Step, nth = 1) => (provider: BatchProvider.Service): BatchProvider.Service => {
  let calls = 0
  const after = <A, E>(effect: Effect.Effect<A, E>) =>
    Effect.flatMap(effect, (a) => (++calls === nth ? Effect.die(new Crash(`crash after ${step} #${nth}`)) : Effect.succeed(a)))
  return {
    ...provider,
    upload: step === "upload" ? (name, lines) => after(provider.upload(name, lines)) : provider.upload,
    create: step === "create" ? (upload, endpoint, t) => after(provider.create(upload, endpoint, t)) : provider.create,
    poll: step === "poll" ? (id) => after(provider.poll(id)) : provider.poll,
    results: step === "results" ? (status) => after(provider.results(status)) : provider.results
  }
}

describe("BatchApi.run: crash-safe", () => {
  for (const [step, nth] of [["upload", 2], ["create", 1], ["create", 3], ["poll", 4], ["results", 2]] as const) {
    it.effect(`killed right after ${step} #${nth}, run again under its id: no shard gets a second batch, every item once`, () =>
      Effect.gen(function*() {
        const sim = yield* Simulator.Simulator
        const base = yield* OpenAiBatch.make({ baseUrl: `${sim.url}/v1`, fileReady: Schedule.spaced("100 millis") })
        const items = prompts(90, 30)
        const go = (provider: BatchProvider.Service) =>
          runOnTestClock(
            chatRun(sim, items, { shard: { maxRequests: 30 }, checkpoint: { runId: "crash-run" } }),
            "10 seconds",
            200
          ).pipe(Effect.provideService(BatchProvider.BatchProvider, provider))
        const first = yield* Effect.exit(go(crashAfter(step, nth)(base)))
        expect(Exit.isFailure(first) && String(first.cause)).toContain(`crash after ${step}`)
        const { report, results } = yield* go(base)
        oneEach(results, 90)
        expect(tags(results)).toEqual({ Succeeded: 87, Failed: 3 })
        const metrics = (yield* sim.metrics).batches
        // One batch per shard, whichever run created it; each answer billed once.
        expect(metrics.created).toBe(3)
        expect(metrics.billedTwice).toEqual({})
        expect(metrics.linesBilled).toBe(87)
        if (step === "create") expect(report.batchesAttached).toBeGreaterThanOrEqual(1)
      }).pipe(Effect.provide(harness({ batches: { validateMs: 1_000, linesPerSecond: 10 } }))))
  }

  it.effect("killed between recording a shard's outcomes and marking it ingested: run again, each result is handed over once", () =>
    withSim({ batches: { validateMs: 1_000, linesPerSecond: 10 } }, (sim) =>
      Effect.gen(function*() {
        const items = prompts(60)
        const go = (onResult: (r: TaskResult.TaskResult<OpenAiCompat.ChatCompletion, unknown>) => Effect.Effect<void>) =>
          runOnTestClock(chatRun(sim, items, { shard: { maxRequests: 30 }, checkpoint: { runId: "ingest-crash" }, onResult }), "10 seconds", 200)
        const first = yield* Effect.exit(go(() => Effect.die(new Crash("crash in ingest"))))
        expect(Exit.isFailure(first)).toBe(true)
        const handed: Array<number> = []
        const { results } = yield* go((r) => Effect.sync(() => void handed.push(r.index)))
        oneEach(results, 60)
        expect(handed.length).toBe(60)
        expect(new Set(handed).size).toBe(60)
        expect((yield* sim.metrics).batches).toMatchObject({ created: 2, linesBilled: 60, billedTwice: {} })
      })))

  it.effect("cancel: a run's batches are cancelled at the provider; attached again, it keeps what ran and skips the rest", () =>
    Effect.gen(function*() {
      const sim = yield* Simulator.Simulator
      const base = yield* OpenAiBatch.make({ baseUrl: `${sim.url}/v1`, fileReady: Schedule.spaced("100 millis") })
      const items = prompts(40)
      const go = (provider: BatchProvider.Service) =>
        runOnTestClock(chatRun(sim, items, { shard: { maxRequests: 20 }, checkpoint: { runId: "cancel-run" } }), "2 seconds", 400)
          .pipe(Effect.provideService(BatchProvider.BatchProvider, provider))
      // Dies at its first poll of the second batch, 20 s after the first was created: both are running.
      yield* Effect.exit(go(crashAfter("poll", 2)(base)))
      const cancelled = yield* BatchApi.cancel("cancel-run").pipe(Effect.provideService(BatchProvider.BatchProvider, base))
      expect(cancelled).toBe(2)
      const { results } = yield* go(base)
      oneEach(results, 40)
      const count = tags(results)
      expect(count.Skipped).toBeGreaterThan(0)
      expect((count.Succeeded ?? 0) + count.Skipped!).toBe(40)
      expect((yield* sim.metrics).batches.created).toBe(2)
    }).pipe(Effect.provide(harness({ batches: { validateMs: 0, linesPerSecond: 1, cancelMs: 1_000 } }))))

  it.effect("a shard whose estimate the budget refuses is not created: its items are skipped, unrecorded; resumed with room, it runs", () =>
    Effect.gen(function*() {
      const sim = yield* Simulator.Simulator
      const provider = yield* OpenAiBatch.make({ baseUrl: `${sim.url}/v1`, fileReady: Schedule.spaced("100 millis") })
      const items = prompts(90)
      const spec = BatchApi.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat", prices, defaults: { max_tokens: 16 } })
      const perShard = items.slice(0, 30).reduce((sum, item, i) => sum + spec.estimate!(item, i), 0)
      const go = (maxCost: number) =>
        runOnTestClock(chatRun(sim, items, { shard: { maxRequests: 30 }, maxShards: 1, checkpoint: { runId: "budget" } }), "10 seconds", 200)
          .pipe(Effect.provideService(BatchProvider.BatchProvider, provider), Effect.provide(Budget.layer({ maxCost })))
      const first = yield* go(perShard * 1.5)
      expect(tags(first.results)).toEqual({ Succeeded: 30, Skipped: 60 })
      expect(first.results.filter((r) => r._tag === "Skipped").every((r) => r._tag === "Skipped" && r.reason === "budget")).toBe(true)
      expect(first.report.cost).toBeLessThanOrEqual(perShard * 1.5)
      expect((yield* sim.metrics).batches.created).toBe(1)
      const second = yield* go(1)
      expect(tags(second.results)).toEqual({ Succeeded: 90 })
      expect(second.results.filter((r) => r._tag === "Succeeded" && r.source === "checkpoint")).toHaveLength(30)
      expect((yield* sim.metrics).batches).toMatchObject({ created: 3, linesBilled: 90, billedTwice: {} })
    }).pipe(Effect.provide(harness({ batches: { validateMs: 1_000, linesPerSecond: 10 } }))))

  it.effect("past the fallback's deadline, batches still out are cancelled, what they answered is kept, and the rest runs live", () =>
    withSim({ batches: { validateMs: 0, linesPerSecond: 1, cancelMs: 5_000 } }, (sim) =>
      Effect.gen(function*() {
        const items = prompts(60, 20)
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat", prices, defaults: { max_tokens: 16 } })
        const http = yield* HttpClient.HttpClient
        const live = (indices: ReadonlyArray<number>) =>
          Batch.run(indices, (i) => llm.task(items[i]!, i), { concurrency: 8 }).pipe(
            Effect.map(({ results }) => results.map((r) => ({ ...r, index: indices[r.index]! }))),
            Effect.provideService(HttpClient.HttpClient, http)
          )
        const { report, results } = yield* runOnTestClock(
          chatRun(sim, items, { shard: { maxRequests: 30 }, fallback: { after: "20 seconds", live, cost: (c) => c.cost } }),
          "5 seconds",
          200
        )
        oneEach(results, 60)
        expect(tags(results)).toEqual({ Succeeded: 57, Failed: 3 })
        const bySource = { batch: 0, call: 0 }
        for (const r of results) if (r._tag === "Succeeded") bySource[r.source as "batch" | "call"]++
        // The batches ran at a line a second until the deadline: what they answered is kept, the rest went live.
        expect(bySource.batch).toBeGreaterThan(10)
        expect(bySource.call).toBeGreaterThan(10)
        // Live: the answers called, and the INVALID prompts the batches had not reached.
        expect(report.live).toBeGreaterThanOrEqual(bySource.call)
        expect(report.live).toBeLessThanOrEqual(bySource.call + 3)
        // No line paid twice: each answer was billed in a batch or called live, not both.
        const metrics = yield* sim.metrics
        expect(metrics.batches).toMatchObject({ created: 2, linesBilled: bySource.batch, billedTwice: {} })
        expect(metrics.byStatus["200"]).toBe(bySource.call)
      })))

  it.effect("a run resumed with another input is refused (CheckpointMismatch), and its record is untouched", () =>
    withSim({ batches: { validateMs: 0 } }, (sim) =>
      Effect.gen(function*() {
        yield* runOnTestClock(chatRun(sim, prompts(5), { checkpoint: { runId: "mismatch" } }), "10 seconds")
        const error = yield* Effect.flip(chatRun(sim, ["other", ...prompts(4)], { checkpoint: { runId: "mismatch" } }))
        expect(error._tag).toBe("CheckpointMismatch")
        const store = yield* CheckpointStore.CheckpointStore
        expect((yield* store.load("mismatch")).size).toBe(5)
      })))
})

// ---------------------------------------------------------------------------
// any outcomes: an in-memory provider
// ---------------------------------------------------------------------------

type LineFate = "answer" | "permanent" | "again" | "cancelled" | "missing" | "malformed"

/** A provider that ends each batch at its first poll, giving line `k` of batch `b` the fate `fates(b, k)`. */
const memoryProvider = (fate: (batch: number, line: number) => LineFate, refuseLine: (batch: number) => number | undefined) => {
  const batches: Array<{ readonly lines: ReadonlyArray<string> }> = []
  const files: Array<ReadonlyArray<string>> = []
  const provider: BatchProvider.Service = {
    name: "memory",
    inline: false,
    limits: { maxRequests: 7, maxBytes: 10_000 },
    line: (customId, _endpoint, body) => JSON.stringify({ custom_id: customId, body }),
    upload: (_name, lines) => Effect.sync(() => String(files.push(lines) - 1)),
    create: (upload) => Effect.sync(() => String(batches.push({ lines: files[Number(upload)]! }) - 1)),
    find: () => Effect.succeed(Option.none()),
    poll: (id) =>
      Effect.sync(() => {
        const refused = refuseLine(Number(id))
        const n = batches[Number(id)]!.lines.length
        return {
          id,
          state: refused === undefined ? "completed" : "failed",
          ended: refused === undefined ? "completed" as const : "failed" as const,
          counts: { total: n, completed: n, failed: 0 },
          failures: refused === undefined ? [] : [{ code: "invalid_json_line", message: "bad", line: Math.min(refused, n) }],
          results: { output: id, errors: null }
        }
      }),
    results: (status) =>
      Effect.sync(() => {
        const b = Number(status.id)
        return batches[b]!.lines.flatMap((text, k): Array<BatchProvider.LineOutcome> => {
          const customId = (JSON.parse(text) as { custom_id: string }).custom_id
          switch (fate(b, k)) {
            case "answer":
              return [{ _tag: "Answered", customId, body: { echo: customId } }]
            case "permanent":
              return [{ _tag: "Permanent", customId, status: 400, message: "bad request" }]
            case "again":
              return [{ _tag: "Again", customId, reason: "HTTP 503" }]
            case "cancelled":
              return [{ _tag: "Cancelled", customId }]
            case "missing":
              return []
            case "malformed":
              return [{ _tag: "Malformed", message: "garbled" }]
          }
        })
      }),
    cancel: () => Effect.void
  }
  return { provider, batches }
}

describe("BatchApi.run: any outcomes", () => {
  it.effect.prop(
    "whatever each line's fate in each round, every item gets exactly one result, answers are its own, and rounds are kept",
    {
      n: fc.integer({ min: 0, max: 30 }),
      rounds: fc.integer({ min: 1, max: 4 }),
      fates: fc.array(fc.constantFrom<LineFate>("answer", "permanent", "again", "cancelled", "missing", "malformed"), { minLength: 1 }),
      refusals: fc.array(fc.option(fc.integer({ min: 1, max: 7 }), { nil: undefined }), { maxLength: 5 })
    },
    ({ fates, n, refusals, rounds }) =>
      Effect.gen(function*() {
        const { batches, provider } = memoryProvider(
          (b, k) => fates[(b * 7 + k) % fates.length]!,
          (b) => refusals[b]
        )
        const { report, results } = yield* BatchApi.run(Array.from({ length: n }, (_, i) => i), {
          endpoint: "/v1/test",
          toRequest: (item) => ({ model: item % 3 === 0 ? "m1" : "m2", body: { item } }),
          decode: (body) => Effect.succeed(body as { echo: string }),
          rounds,
          poll: Schedule.forever
        }).pipe(Effect.provideService(BatchProvider.BatchProvider, provider))
        oneEach(results, n)
        for (const result of results) {
          if (result._tag === "Succeeded") {
            const named = parseCustomId(result.value.echo, result.value.echo.split("_")[0]!)
            expect(named?.index).toBe(result.index)
            expect(result.attempts).toBeLessThanOrEqual(rounds)
          }
          if (result._tag === "Failed" && result.errorClass === "Transient") expect(result.attempts).toBe(rounds)
        }
        expect(report.rounds).toBeLessThanOrEqual(rounds)
        // Batches hold one model each and at most the provider's line count.
        for (const batch of batches) expect(batch.lines.length).toBeLessThanOrEqual(7)
        expect(report.succeeded + report.failed + report.skipped).toBe(n)
      }),
    { fastCheck: { numRuns: 150 } }
  )
})
