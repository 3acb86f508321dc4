/**
 * The same chat requests through a provider's Batch API instead of live
 * calls: about half the price, for work that can wait. `BatchApi.chat` makes
 * the requests `OpenAiCompat.chat` would send live and decodes the answers
 * into the same `ChatCompletion`s; `OpenAiBatch` is the provider (OpenAI's
 * Batch API, which the simulator speaks too). The run is checkpointed: run
 * it again under the same id after a crash and it re-attaches to the
 * batches it had created.
 *
 * The simulator's batches run on its clock: here a shard of 100 lines ends
 * in about a second; OpenAI's take minutes to hours.
 */
import { NodeHttpClient, NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Schedule } from "effect"
import { createServer } from "node:http"
import { CheckpointStore } from "effect-batch"
import { BatchApi, OpenAiBatch, Simulator } from "effect-batch/llm"

const prompts = Array.from({ length: 250 }, (_, i) =>
  i % 100 === 7 ? `Classify this INVALID row ${i}` : `Classify row ${i} as positive, negative or neutral`)

const program = Effect.gen(function*() {
  const simulator = yield* Simulator.Simulator
  const baseUrl = `${simulator.url}/v1`

  const { report, results } = yield* BatchApi.run(prompts, {
    ...BatchApi.chat({ baseUrl, model: "sim-chat", defaults: { max_tokens: 16 } }),
    shard: { maxRequests: 100 },
    poll: Schedule.spaced("200 millis"),
    checkpoint: { runId: "nightly-classify" }
  }).pipe(Effect.provide(OpenAiBatch.layer({ baseUrl })))

  const first = results.find((r) => r._tag === "Succeeded")
  yield* Console.log(`first answer: ${first?._tag === "Succeeded" ? first.value.content.slice(0, 60) : "none"}…`)
  yield* Console.log(`${report.succeeded} succeeded, ${report.failed} failed, in ${report.batchesCreated} batches`)
  yield* Console.log(`cost $${report.cost.toFixed(4)}, live $${report.liveCost.toFixed(4)}`)
})

const simulated = Simulator.layer({
  batches: { validateMs: 200, linesPerSecond: 200, finalizeMs: 100, fileProcessingMs: 50 }
}).pipe(Layer.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })))

NodeRuntime.runMain(program.pipe(
  Effect.provide(Layer.mergeAll(simulated, NodeHttpClient.layerUndici, CheckpointStore.layerMemory))
))
