/**
 * `AnthropicBatch` against the simulator's Message Batches, over real HTTP
 * on loopback, both on the `TestClock`: a batch's life and what its lines
 * say, cancel and expiry, a refused request, and `BatchApi.run` with
 * `AnthropicBatch.chat` — also killed right after creating a batch, whose
 * id is then found by time and size (Anthropic keeps no metadata).
 */
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Redacted, Schedule, TestClock } from "effect"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as AnthropicBatch from "../../src/llm/AnthropicBatch.js"
import * as BatchApi from "../../src/llm/BatchApi.js"
import * as BatchProvider from "../../src/llm/BatchProvider.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import { byTag, untilEnded } from "../support/batchProviders.js"
import { runOnTestClock } from "../support/TestTime.js"

const key = "sk-ant-test"

const harness = (options: Simulator.Options) =>
  Layer.mergeAll(
    SimulatorServer.layer({ latency: { baseMs: 0 }, apiKey: key, ...options }),
    NodeHttpClient.layerUndici,
    CheckpointStore.layerMemory
  )

const withProvider = <A, E>(
  options: Simulator.Options,
  f: (provider: BatchProvider.Service, sim: Simulator.Service) => Effect.Effect<A, E, CheckpointStore.CheckpointStore>
) =>
  Effect.gen(function*() {
    const sim = yield* Simulator.Simulator
    const provider = yield* AnthropicBatch.make({ baseUrl: `${sim.url}/v1`, apiKey: Redacted.make(key) })
    return yield* f(provider, sim)
  }).pipe(Effect.provide(harness(options)))

const spec = AnthropicBatch.chat({ model: "sim-chat", maxTokens: 16, prices: { input: 3, output: 15 } })

const lineOf = (provider: BatchProvider.Service, customId: string, prompt: string) =>
  provider.line(customId, spec.endpoint, spec.toRequest(prompt, 0).body)

describe("AnthropicBatch against the simulator's Message Batches", () => {
  it.effect("in_progress → ended; succeeded lines decode to ChatCompletions at half the price, a flagged one is invalid_request_error", () =>
    withProvider({ batches: { validateMs: 0, linesPerSecond: 1 } }, (provider) =>
      Effect.gen(function*() {
        const lines = ["one", "INVALID two", "three"].map((p, i) => lineOf(provider, `r_0_${i}`, p))
        const id = yield* provider.create(yield* provider.upload("s", lines), spec.endpoint, {})
        expect(id).toMatch(/^msgbatch_/)
        const { seen, status } = yield* untilEnded(provider, id)
        expect(seen).toEqual(["in_progress", "ended"])
        expect(status).toMatchObject({ ended: "completed", counts: { total: 3, completed: 2, failed: 1 } })
        const outcomes = yield* provider.results(status)
        expect(byTag(outcomes)).toEqual({ Answered: ["r_0_0", "r_0_2"], Permanent: ["r_0_1"] })
        expect(outcomes.find((o) => o._tag === "Permanent")).toMatchObject({ message: expect.stringMatching(/^invalid_request_error: .*flagged/) })
        const answered = outcomes.find((o) => o._tag === "Answered" && o.customId === "r_0_0")!
        const completion = yield* spec.decode((answered as { body: unknown }).body, "one", 0)
        expect(completion.content).toMatch(/one/)
        expect(completion.usage.completionTokens).toBeLessThanOrEqual(16)
        const live = (completion.usage.promptTokens * 3 + completion.usage.completionTokens * 15) / 1e6
        expect(completion.cost).toBeCloseTo(live / 2, 12)
      })))

  it.effect("cancel: canceling, then ended; what ran is answered, the rest canceled; expiry leaves the rest expired", () =>
    withProvider({ batches: { validateMs: 0, linesPerSecond: 1, cancelMs: 2_000, windowMs: 60_000 } }, (provider) =>
      Effect.gen(function*() {
        const lines = Array.from({ length: 6 }, (_, i) => lineOf(provider, `c_0_${i}`, `prompt ${i}`))
        const id = yield* provider.create(yield* provider.upload("c", lines), spec.endpoint, {})
        yield* TestClock.adjust("2 seconds")
        yield* provider.cancel(id)
        const { seen, status } = yield* untilEnded(provider, id)
        expect(seen).toEqual(["canceling", "ended"])
        expect(status.ended).toBe("cancelled")
        expect(byTag(yield* provider.results(status))).toEqual({ Answered: ["c_0_0", "c_0_1"], Cancelled: ["c_0_2", "c_0_3", "c_0_4", "c_0_5"] })

        const many = Array.from({ length: 100 }, (_, i) => lineOf(provider, `e_0_${i}`, `prompt ${i}`))
        const expiring = yield* provider.create(yield* provider.upload("e", many), spec.endpoint, {})
        const ended = yield* untilEnded(provider, expiring)
        expect(ended.status.ended).toBe("expired")
        const tags = byTag(yield* provider.results(ended.status))
        expect([tags.Answered?.length, tags.Again?.length]).toEqual([60, 40])
      })))

  it.effect("a request the API refuses (a custom_id used twice) fails create with its status and message, without retries", () =>
    withProvider({}, (provider, sim) =>
      Effect.gen(function*() {
        const line = lineOf(provider, "d_0_0", "x")
        const error = yield* Effect.flip(provider.create(yield* provider.upload("d", [line, line]), spec.endpoint, {}))
        expect(error).toMatchObject({ _tag: "BatchApiError", operation: "create", status: 400 })
        expect(error.message).toContain("d_0_0 is used twice")
        expect((yield* sim.metrics).batches.created).toBe(0)
      })))

  it.effect("BatchApi.run killed right after creating a batch: run again, the batch is found by time and size, none is created twice", () =>
    withProvider({ batches: { validateMs: 1_000, linesPerSecond: 10 } }, (base, sim) =>
      Effect.gen(function*() {
        let creates = 0
        const crashing: BatchProvider.Service = {
          ...base,
          create: (upload, endpoint, tags) =>
            Effect.flatMap(base.create(upload, endpoint, tags), (id) => (++creates === 2 ? Effect.dieMessage("killed") : Effect.succeed(id)))
        }
        const prompts = Array.from({ length: 90 }, (_, i) => (i === 40 ? `INVALID ${i}` : `prompt ${i}`))
        const go = (provider: BatchProvider.Service) =>
          runOnTestClock(
            BatchApi.run(prompts, { ...spec, shard: { maxRequests: 30 }, poll: Schedule.spaced("10 seconds"), checkpoint: { runId: "anthropic" } }),
            "10 seconds",
            200
          ).pipe(Effect.provideService(BatchProvider.BatchProvider, provider))
        expect(Exit.isFailure(yield* Effect.exit(go(crashing)))).toBe(true)
        const { report, results } = yield* go(base)
        expect(results.map((r) => r._tag).filter((t) => t === "Succeeded")).toHaveLength(89)
        expect(results[40]).toMatchObject({ _tag: "Failed", errorClass: "Permanent" })
        expect(report.batchesAttached).toBeGreaterThanOrEqual(1)
        const metrics = (yield* sim.metrics).batches
        expect(metrics).toMatchObject({ created: 3, linesBilled: 89, billedTwice: {} })
        expect(report.liveCost).toBeCloseTo(report.cost * 2, 10)
      })))
})
