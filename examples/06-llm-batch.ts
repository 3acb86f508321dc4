/**
 * An LLM batch end to end: the OpenAI-compatible adapter against the
 * simulated provider, with a budget and a result cache.
 *
 * The simulator (a real HTTP server on 127.0.0.1) allows 3 000 requests per
 * minute, fails 5 % of calls with a 5xx and rejects prompts that contain
 * `INVALID`. The batch is told none of that: `OpenAiCompat.chat` teaches the
 * rate limiter the limits the provider announces in its `x-ratelimit-*`
 * headers, the retry policy absorbs the 5xx, and an INVALID prompt costs one
 * call. A `Budget` prices every call; a second run over the same
 * `ResultCache` pays for nothing.
 */
import { NodeHttpClient, NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { createServer } from "node:http"
import { Batch, BatchReport, Budget, ResultCache } from "effect-batch"
import { OpenAiCompat, Simulator } from "effect-batch/llm"

const prompts = Array.from({ length: 200 }, (_, i) =>
  i % 50 === 7 ? `Translate this INVALID request ${i}` : `Write a one-line summary of document ${i}`)

const program = Effect.gen(function*() {
  const simulator = yield* Simulator.Simulator
  const llm = OpenAiCompat.chat({ baseUrl: `${simulator.url}/v1`, model: "sim-chat", defaults: { max_tokens: 64 } })

  const { report, results } = yield* Batch.run(prompts, llm.task, {
    ...llm.options,
    concurrency: 16,
    cache: { key: llm.cacheKey }
  })
  const first = results.find((r) => r._tag === "Succeeded")
  yield* Console.log(`first answer: ${first?._tag === "Succeeded" ? first.value.content.slice(0, 60) : "none"}…`)
  yield* Console.log(`\nfirst run\n${BatchReport.format(report)}`)

  const again = yield* Batch.run(prompts, llm.task, { ...llm.options, concurrency: 16, cache: { key: llm.cacheKey } })
  const metrics = yield* simulator.metrics
  yield* Console.log(`\nsecond run: ${again.report.sources.cache} from the cache, ${again.report.attempts} calls ` +
    `(the ${again.report.failed} INVALID prompts again: failures are not cached), $${again.report.cost.actual.toFixed(4)} spent`)
  yield* Console.log(`provider saw ${metrics.received} requests in all: ${JSON.stringify(metrics.byStatus)}`)
})

const simulated = Simulator.layer({
  requestsPerMinute: 3_000,
  failureRate: 0.05,
  latency: { baseMs: 40, jitter: 0.2 }
}).pipe(Layer.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })))

NodeRuntime.runMain(program.pipe(
  Effect.provide(Layer.mergeAll(
    simulated,
    NodeHttpClient.layerUndici,
    Budget.layer({ maxCost: 1 }),
    ResultCache.layerMemory()
  ))
))
