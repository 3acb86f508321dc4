// What checkpointing costs: the same batch at ~2 000 items/s (20 000 items of 5 ms, concurrency 10)
// without a checkpoint and with one in SQLite (WAL, a temp file), each in its own process.
//   node test/bench/checkpoint.mjs            (both, and the ratio)
//   node test/bench/checkpoint.mjs <plain|sqlite>   (one measurement, a JSON line)
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Batch } from "../../dist/index.js"
import { SqlCheckpointStore } from "../../dist/sql/index.js"

const items = Array.from({ length: 20_000 }, (_, i) => ({ id: i, prompt: `item ${i}` }))
const task = (item) => Effect.as(Effect.sleep("5 millis"), { id: item.id, text: `answer ${item.id}` })
const mode = process.argv[2]

if (mode === undefined) {
  const measure = (which) => JSON.parse(execFileSync(process.execPath, [new URL(import.meta.url).pathname, which], { encoding: "utf8" }))
  const plain = measure("plain")
  const sqlite = measure("sqlite")
  const cost = 1 - sqlite.itemsPerSecond / plain.itemsPerSecond
  console.log("\ncheckpoint overhead: 20 000 items of 5 ms at concurrency 10")
  console.log(`  without checkpoint   ${plain.ms.toFixed(0)} ms  ${plain.itemsPerSecond.toFixed(0)} items/s`)
  console.log(`  SQLite checkpoint    ${sqlite.ms.toFixed(0)} ms  ${sqlite.itemsPerSecond.toFixed(0)} items/s`)
  console.log(`${cost <= 0.1 ? "PASS" : "MISS"}  checkpointing costs ${(cost * 100).toFixed(1)} % of throughput (goal ≤ 10 %)`)
} else {
  const dir = mkdtempSync(join(tmpdir(), "effect-batch-bench-"))
  const run = mode === "plain"
    ? Batch.run(items, task, { concurrency: 10 })
    : Batch.run(items, task, { concurrency: 10, checkpoint: { runId: "bench" } }).pipe(
        Effect.provide(SqlCheckpointStore.layer().pipe(Layer.provide(SqliteClient.layer({ filename: join(dir, "bench.db"), disableWAL: true }))))
      )
  const start = performance.now()
  const { report } = await Effect.runPromise(run)
  const ms = performance.now() - start
  rmSync(dir, { recursive: true, force: true })
  console.log(JSON.stringify({ mode, ms, itemsPerSecond: (report.succeeded * 1000) / ms }))
}
