/**
 * The OpenAI-compatible adapter against the simulator on a real loopback
 * port, called through `@effect/platform`'s HttpClient (undici).
 */
import { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Redacted, TestClock } from "effect"
import * as Batch from "../../src/Batch.js"
import * as Budget from "../../src/Budget.js"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as ConcurrencyLimiter from "../../src/ConcurrencyLimiter.js"
import * as Idempotency from "../../src/Idempotency.js"
import * as OpenAiCompat from "../../src/llm/OpenAiCompat.js"
import * as RateLimiter from "../../src/RateLimiter.js"
import * as ResultCache from "../../src/ResultCache.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import { recordingAlgorithm } from "../support/recordingAlgorithm.js"

/** Request headers seen by the client, to check what the adapter sends. */
const sentHeaders: Array<Readonly<Record<string, string>>> = []
const recordingClient = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(HttpClient.HttpClient, HttpClient.tapRequest((request) => Effect.sync(() => void sentHeaders.push(request.headers))))
).pipe(Layer.provide(NodeHttpClient.layerUndici))

const withSimulator = <A, E, R>(
  options: Simulator.Options,
  f: (sim: Simulator.Service) => Effect.Effect<A, E, R>
) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(Layer.mergeAll(
      SimulatorServer.layer(options),
      recordingClient,
      RetryPolicy.layer({ base: "20 millis", maxDelay: "200 millis", maxAttempts: 6 })
    ))
  )

const quick = { latency: { baseMs: 5, perOutputTokenMs: 0, jitter: 0 } }

describe("OpenAiCompat.chat", () => {
  it.live("completes prompts and request objects, with usage, cost and estimates in the report", () =>
    withSimulator(quick, (sim) =>
      Effect.gen(function*() {
        sentHeaders.length = 0
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat", apiKey: Redacted.make("sk-test") })
        const inputs: Array<OpenAiCompat.ChatInput> = [
          "Summarise the history of Rome",
          { messages: [{ role: "system", content: "Be brief" }, { role: "user", content: "Name a color" }], max_tokens: 20 }
        ]
        const { report, results } = yield* Batch.run(inputs, llm.task, { ...llm.options, concurrency: 2 })
        expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Succeeded"])
        const [first, second] = results.map((r) => (r._tag === "Succeeded" ? r.value : undefined))
        expect(first!.content).toContain("Summarise the history")
        expect(first!.usage.promptTokens).toBeGreaterThan(0)
        expect(second!.usage.completionTokens).toBeLessThanOrEqual(20)
        expect(first!.cost).toBeCloseTo(Budget.costOf(Budget.defaultPrices["sim-chat"]!, {
          inputTokens: first!.usage.promptTokens,
          outputTokens: first!.usage.completionTokens
        }), 12)
        expect(report.cost.actual).toBeCloseTo(first!.cost + second!.cost, 12)
        // Estimates reserve max_tokens (or 256): never below what was used.
        expect(report.tokens.estimated).toBeGreaterThanOrEqual(report.tokens.actual)
        expect(sentHeaders.every((h) => h.authorization === "Bearer sk-test")).toBe(true)
        expect(new Set(sentHeaders.map((h) => h["idempotency-key"])).size).toBe(2)
      })))

  it.live("the same item keeps its Idempotency-Key across retries", () =>
    withSimulator({ ...quick, failureRate: 0.6, seed: 7 }, (sim) =>
      Effect.gen(function*() {
        sentHeaders.length = 0
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const { results } = yield* Batch.run(["only item"], llm.task, { ...llm.options })
        expect(results[0]!._tag).toBe("Succeeded")
        expect(results[0]!.attempts).toBeGreaterThan(1)
        expect(sentHeaders.length).toBe(results[0]!.attempts)
        expect(new Set(sentHeaders.map((h) => h["idempotency-key"])).size).toBe(1)
      })))

  it.live("in a checkpointed run the Idempotency-Key derives from the run id and the item's key", () =>
    withSimulator(quick, (sim) =>
      Effect.gen(function*() {
        sentHeaders.length = 0
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const inputs = ["first", "second"]
        yield* Batch.run(inputs, llm.task, { ...llm.options, concurrency: 1, checkpoint: { runId: "nightly" } })
        const expected = inputs.map((input, index) =>
          ResultCache.key({ runId: "nightly", itemKey: CheckpointStore.itemKeyOf(index, input) }).slice(0, 40))
        expect(sentHeaders.map((h) => h["idempotency-key"])).toEqual(expected)
      }).pipe(Effect.provide(CheckpointStore.layerMemory))))

  it.live("under a CurrentRun (a job) the Idempotency-Key derives from the run id and the index the task is called with", () =>
    withSimulator(quick, (sim) =>
      Effect.gen(function*() {
        sentHeaders.length = 0
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        // As the job service calls it: the item's index in the job, not in the chunk's batch.
        const items = [{ input: "first", index: 200 }, { input: "second", index: 201 }]
        yield* Batch.run(items, (item) => llm.task(item.input, item.index), { concurrency: 1 }).pipe(
          Effect.provideService(Idempotency.CurrentRun, { runId: "job_1" })
        )
        const expected = ["200", "201"].map((itemKey) => ResultCache.key({ runId: "job_1", itemKey }).slice(0, 40))
        expect(sentHeaders.map((h) => h["idempotency-key"])).toEqual(expected)
      })))

  it.live("failures are classified: INVALID is Permanent after one call, quota stops the batch", () =>
    withSimulator({ ...quick, quotaTokens: 600 }, (sim) =>
      Effect.gen(function*() {
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const inputs = ["fine", "this is INVALID", ...Array.from({ length: 40 }, (_, i) => `prompt ${i} ${"word ".repeat(40)}`)]
        const { report, results } = yield* Batch.run(inputs, llm.task, { ...llm.options, concurrency: 1 })
        expect(results[1]).toMatchObject({ _tag: "Failed", errorClass: "Permanent", attempts: 1 })
        expect(report.failures.QuotaExhausted).toBe(1)
        expect(report.skippedBy.quota).toBeGreaterThan(0)
        expect(report.succeeded + report.failed + report.skipped).toBe(inputs.length)
        const metrics = yield* sim.metrics
        // After the quota answer nothing more was sent.
        expect(metrics.received).toBe(report.attempts)
      })))

  it.live("a run given no limits learns them from x-ratelimit headers and paces itself", () =>
    withSimulator({ ...quick, requestsPerMinute: 1_200, bucketMs: 500 }, (sim) =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make()
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const prompts = Array.from({ length: 40 }, (_, i) => `prompt ${i}`)
        const { report } = yield* Batch.run(prompts, llm.task, { ...llm.options, concurrency: 8 }).pipe(
          Effect.provideService(RateLimiter.RateLimiter, limiter)
        )
        expect(report.succeeded).toBe(40)
        const learned = yield* limiter.limits
        expect(learned).toContainEqual({ unit: "requests", limit: 1_200, window: "1 minute" })
        // The bucket holds 10; the first 8 go at once, then 20/s: no 429 at all.
        const metrics = yield* sim.metrics
        expect(metrics.byStatus["429"] ?? 0).toBe(0)
        // 40 requests at 20/s after a burst: at least ~1.5 s.
        expect(report.wallMs).toBeGreaterThan(1_300)
      })))

  // On the TestClock: the simulator's times are exact, and the client's are the same clock.
  it.effect("an adaptive limit samples the provider's own time (openai-processing-ms), a wait for a slot included", () =>
    withSimulator({ capacity: 2, latency: { baseMs: 100, perOutputTokenMs: 0, jitter: 0 } }, (sim) =>
      Effect.gen(function*() {
        const { algorithm, samples } = recordingAlgorithm({ min: 1, max: 8, initial: 4 })
        const limiter = yield* ConcurrencyLimiter.make(algorithm)
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const run = yield* Effect.fork(Batch.run(["a", "b", "c", "d"], llm.task, llm.options).pipe(
          Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
        ))
        const realSleep = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
        while ((yield* sim.metrics).queued < 2) yield* realSleep
        yield* TestClock.adjust("100 millis") // the first pair is served; the queued pair takes the slots
        while (samples.length < 2) yield* realSleep
        yield* TestClock.adjust("100 millis")
        const { report } = yield* Fiber.join(run)
        expect(report.succeeded).toBe(4)
        expect(samples.map((s) => [s.latencyMs, s.providerMs]).sort()).toEqual([[100, 100], [100, 100], [200, 200], [200, 200]])
      })))

  it.live("a limit you configured is never raised by the headers", () =>
    withSimulator({ ...quick, requestsPerMinute: 6_000 }, (sim) =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make({ requestsPerMinute: 3_000 })
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        yield* Batch.run(["a", "b", "c"], llm.task, llm.options).pipe(Effect.provideService(RateLimiter.RateLimiter, limiter))
        expect(yield* limiter.limits).toEqual([{ unit: "requests", limit: 3_000, window: "1 minute" }])
      })))

  it.live("a flaky provider: every item succeeds after retries", () =>
    withSimulator({ ...quick, failureRate: 0.3 }, (sim) =>
      Effect.gen(function*() {
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const { report } = yield* Batch.run(Array.from({ length: 30 }, (_, i) => `p${i}`), llm.task, {
          ...llm.options,
          concurrency: 8
        })
        expect(report.succeeded).toBe(30)
        expect(report.retries).toBeGreaterThan(0)
      })))

  it.live("interrupting a task aborts its HTTP request", () =>
    withSimulator({ latency: { baseMs: 5_000, perOutputTokenMs: 0, jitter: 0 } }, (sim) =>
      Effect.gen(function*() {
        const llm = OpenAiCompat.chat({ baseUrl: `${sim.url}/v1`, model: "sim-chat" })
        const fiber = yield* Effect.fork(llm.task("slow", 0))
        yield* Effect.sleep("200 millis")
        expect((yield* sim.metrics).inFlight).toBe(1)
        yield* Fiber.interrupt(fiber)
        // The server learns of the abort asynchronously: poll for up to 2 s (the call itself takes 5).
        let inFlight = 1
        for (let i = 0; i < 200 && inFlight > 0; i++) {
          yield* Effect.sleep("10 millis")
          inFlight = (yield* sim.metrics).inFlight
        }
        expect(inFlight).toBe(0)
        expect((yield* sim.metrics).byStatus).toEqual({ 499: 1 })
      })))

  it("rejects a bad configuration, naming the field", () => {
    expect(() => OpenAiCompat.chat({ baseUrl: "localhost:8080", model: "m" })).toThrow(/baseUrl/)
    expect(() => OpenAiCompat.chat({ baseUrl: "http://x", model: " " })).toThrow(/model/)
    expect(() => OpenAiCompat.chat({ baseUrl: "http://x", model: "m", expectedOutputTokens: 0 })).toThrow(/expectedOutputTokens/)
  })
})

describe("OpenAiCompat.embed", () => {
  it("groups texts by count and by token budget", () => {
    const texts = ["a".repeat(40), "b".repeat(40), "c".repeat(400), "d", "e", "f"]
    // 10, 10, 100, 1, 1, 1 tokens; at most 3 per group and 50 tokens.
    expect(OpenAiCompat.groupTexts(texts, 3, 50)).toEqual([[0, 1], [2], [3, 4, 5]])
    expect(OpenAiCompat.groupTexts([], 3, 50)).toEqual([])
  })

  it.live("maps vectors back to their texts; a bad input fails alone", () =>
    withSimulator(quick, (sim) =>
      Effect.gen(function*() {
        const texts = Array.from({ length: 30 }, (_, i) => (i === 13 ? "this one is INVALID" : `text number ${i}`))
        const embed = OpenAiCompat.embed({ baseUrl: `${sim.url}/v1`, model: "sim-embed", maxInputs: 8 })
        const { reports, results } = yield* embed(texts, { concurrency: 4 })
        expect(results.map((r) => r.index)).toEqual(texts.map((_, i) => i))
        expect(results[13]).toMatchObject({ _tag: "Failed", errorClass: "Permanent" })
        expect(results.filter((r) => r._tag === "Succeeded").length).toBe(29)
        // 4 groups; the one holding #13 was rejected whole and its 8 texts retried alone.
        expect(reports.map((r) => r.total)).toEqual([4, 8])
        // Grouping does not change a text's vector: embed #0 alone and compare.
        const alone = yield* embed([texts[0]!])
        const vector = (r: (typeof results)[number] | undefined) => (r?._tag === "Succeeded" ? r.value.vector : undefined)
        expect(vector(alone.results[0])).toEqual(vector(results[0]))
        expect(vector(results[0])!.length).toBe(8)
      })))
})
