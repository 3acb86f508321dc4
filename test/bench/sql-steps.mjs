// What a statement costs in fiber steps through `@effect/sql` on SQLite (`@effect/sql-sqlite-node`, in memory),
// apart from SQLite's own work: a read, a write, the same in a transaction, an unprepared one, each run 1 000
// times after a first run, with the steps counted by fiber-steps.mjs; Effect's tracer off, as the service runs
// without --otlp (on, the counts are the same). The jobs bench's `--count` figures are of the same kind (an item
// through `Batch.run` is 157–192 steps), so this tells what a job's statements weigh against its items. With `--sites`, where a read's steps go, by code site (fiber-sites.mjs).
//   node test/bench/sql-steps.mjs [--sites]
// Prints figures and asserts none.
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const bySite = process.argv.includes("--sites")
const dir = mkdtempSync(join(tmpdir(), "sql-steps-"))
process.env.EFFECT_BATCH_BENCH_STEPS = join(dir, "steps.json")
process.env.EFFECT_BATCH_BENCH_SITES = bySite ? join(dir, "sites.json") : ""
await import("./fiber-steps.mjs")
if (bySite) await import("./fiber-sites.mjs")
const { Effect } = await import("effect")
const { SqlClient } = await import("@effect/sql")
const { SqliteClient } = await import("@effect/sql-sqlite-node")

const RUNS = 1000
const counter = globalThis.effectBatchBenchSteps

const stepsOf = (effect) =>
  Effect.gen(function*() {
    yield* effect
    counter.reset()
    for (let i = 0; i < RUNS; i++) yield* effect
    return counter.counts().steps / RUNS
  })

const main = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE items (id INTEGER PRIMARY KEY, status TEXT)`
  yield* sql`INSERT INTO items (id, status) VALUES (1, NULL)`
  const read = sql`SELECT * FROM items WHERE id = ${1}`
  const write = sql`UPDATE items SET status = ${"done"} WHERE id = ${1}`
  const rows = [
    ["a read (prepared once, cached)", read],
    ["a write", write],
    ["a write in a transaction of its own", sql.withTransaction(write)],
    ["two writes in one transaction", sql.withTransaction(Effect.zipRight(write, write))],
    ["a read, unprepared (prepared at every call)", read.unprepared]
  ]
  console.log(`fiber steps per run (${RUNS} runs each), @effect/sql on SQLite in memory`)
  for (const [what, effect] of rows) console.log(`  ${(yield* stepsOf(effect)).toFixed(0).padStart(5)}  ${what}`)
  if (bySite) {
    yield* read
    globalThis.effectBatchBenchSites.start()
    for (let i = 0; i < RUNS; i++) yield* read
    globalThis.effectBatchBenchSites.stop()
    const { sites } = JSON.parse(readFileSync(process.env.EFFECT_BATCH_BENCH_SITES, "utf8"))
    console.log("\na read's steps by site (step-sites.mjs's names):")
    for (const [site, n] of sites.slice(0, 20)) console.log(`  ${(n / RUNS).toFixed(0).padStart(5)}  ${site}`)
  }
})

// After fiber-steps.mjs's own handler, which writes its counts there at exit.
process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
await Effect.runPromise(main.pipe(Effect.withTracerEnabled(false), Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))
