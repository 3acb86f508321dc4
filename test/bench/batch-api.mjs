// 20 000 prompts through a provider's batch API (the simulator's OpenAI flavour, on loopback, real time),
// checkpointed in SQLite, with the faults batch runs meet: 2 % of lines failing with a 500, a window that
// one shard outlives (partial output, the rest expired), and a queued-token limit that refuses a shard
// after creating it. What it prints: batches created, rounds, lines billed (and billed twice), cost
// against live calls, time and memory. Not a speed race: the simulator's batches take the time they
// are told to.
//   npm run build && node test/bench/batch-api.mjs
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Effect, Layer, Schedule } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BatchApi, OpenAiBatch, Simulator } from "../../dist/llm/index.js"
import { SqlCheckpointStore } from "../../dist/sql/index.js"

const n = 20_000
const prompts = Array.from({ length: n }, (_, i) =>
  i % 1000 === 999 ? `INVALID row ${i}` : `Classify row ${i} of the corpus as positive, negative or neutral.`)
const dir = mkdtempSync(join(tmpdir(), "effect-batch-bench-batch-"))

const simulator = Simulator.layer({
  seed: 7,
  batches: {
    validateMs: 200,
    // 4 000 lines a second: a 4 000-line shard takes ~1 s, the last of five queued behind the token limit longer.
    linesPerSecond: 4_000,
    finalizeMs: 200,
    fileProcessingMs: 100,
    lineFailureRate: 0.02,
    // Shards of 4 000 lines hold ~80 000 prompt tokens: two fit, a third is refused after creation.
    enqueuedTokens: 170_000,
    // A shard that waited behind the limit runs out of its window part way.
    windowMs: 1_150
  }
}).pipe(Layer.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })))

const program = Effect.gen(function*() {
  const sim = yield* Simulator.Simulator
  const baseUrl = `${sim.url}/v1`
  const started = performance.now()
  const { report } = yield* BatchApi.run(prompts, {
    ...BatchApi.chat({ baseUrl, model: "gpt-4o-mini", defaults: { max_tokens: 16 } }),
    shard: { maxRequests: 4_000 },
    poll: Schedule.spaced("100 millis"),
    limitWait: "500 millis",
    rounds: 4,
    checkpoint: { runId: "bench-20k" }
  }).pipe(Effect.provide(OpenAiBatch.layer({ baseUrl, fileReady: Schedule.spaced("50 millis") })))
  const ms = performance.now() - started
  const metrics = (yield* sim.metrics).batches
  return { report, metrics, ms }
})

const { metrics, ms, report } = await Effect.runPromise(program.pipe(
  Effect.provide(Layer.mergeAll(
    simulator,
    NodeHttpClient.layerUndici,
    SqlCheckpointStore.layer().pipe(Layer.provide(SqliteClient.layer({ filename: join(dir, "bench.db"), disableWAL: true })))
  ))
))
rmSync(dir, { recursive: true, force: true })
const twice = Object.keys(metrics.billedTwice).length
console.log(`\nbatch API: ${n} prompts, shards of 4 000, 2 % of lines failing, a token limit, a short window`)
console.log(`  items          ${report.succeeded} succeeded, ${report.failed} failed, ${report.skipped} skipped`)
console.log(`  batches        ${metrics.created} created (${report.shards} shards taken), ${report.rounds} rounds`)
console.log(`  lines billed   ${metrics.linesBilled} (${twice} custom_ids billed twice)`)
console.log(`  cost           $${report.cost.toFixed(4)} against $${report.liveCost.toFixed(4)} live (saved ${(100 * (1 - report.cost / report.liveCost)).toFixed(0)} %)`)
console.log(`  time           ${(ms / 1000).toFixed(1)} s; heap ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`)
const ok = report.succeeded + report.failed + report.skipped === n && twice === 0 && metrics.linesBilled === report.succeeded
console.log(`${ok ? "PASS" : "MISS"}  every prompt one result, no line billed twice, every answer billed once`)
