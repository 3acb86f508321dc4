// `npm run bench`: scheduling overhead of Batch.run and Batch.stream against plain Effect.forEach,
// p-limit and p-map, at 100 000 and 1 000 000 no-op items (each yields once), concurrency 100.
// Every measurement runs in its own process (so peak RSS is its own), against the compiled
// library in dist/. What it does not measure: IO, retries, rate limits (see later benchmarks).
// Options: --sizes 100000,1000000   Exits 0 whatever it finds: benchmarks never fail CI.
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const sizesArg = process.argv.indexOf("--sizes")
const sizes = sizesArg > 0 ? process.argv[sizesArg + 1].split(",").map(Number) : [100_000, 1_000_000]
const runners = ["Effect.forEach", "Batch.run", "Batch.run+metrics", "Batch.run+spans", "Batch.stream", "p-map", "p-limit"]
const child = fileURLToPath(new URL("./child.mjs", import.meta.url))

const rows = []
for (const size of sizes) {
  for (const runner of runners) {
    const out = execFileSync(process.execPath, ["--max-old-space-size=4096", child, runner, String(size)], {
      encoding: "utf8"
    })
    const row = JSON.parse(out.trim().split("\n").pop())
    if (row.done !== size) throw new Error(`${runner} settled ${row.done} of ${size} items`)
    rows.push(row)
    process.stderr.write(`${runner} ${size}: ${Math.round(row.ms)} ms\n`)
  }
}

const pad = (text, width) => String(text).padEnd(width)
console.log(`\n${pad("items", 10)}${pad("runner", 20)}${pad("wall ms", 10)}${pad("× forEach", 11)}${pad("peak RSS MB", 13)}`)
for (const row of rows) {
  const base = rows.find((r) => r.items === row.items && r.runner === "Effect.forEach")
  console.log(
    `${pad(row.items, 10)}${pad(row.runner, 20)}${pad(Math.round(row.ms), 10)}` +
    `${pad((row.ms / base.ms).toFixed(2), 11)}${pad(Math.round(row.maxRssMb), 13)}`
  )
}

const at = (runner) => rows.find((r) => r.items === 1_000_000 && r.runner === runner)
const base = at("Effect.forEach")
if (base !== undefined) {
  const goals = [
    ["Batch.stream (1M, Stream source) peak RSS < 250 MB", at("Batch.stream").maxRssMb < 250],
    ["Batch.stream (1M) within 2× of Effect.forEach", at("Batch.stream").ms <= 2 * base.ms],
    ["Batch.run (1M) within 2× of Effect.forEach", at("Batch.run").ms <= 2 * base.ms],
    ["Batch.run with metrics: true (1M) within 1.2× of Batch.run", at("Batch.run+metrics").ms <= 1.2 * at("Batch.run").ms]
  ]
  console.log("")
  for (const [goal, met] of goals) console.log(`${met ? "PASS" : "MISS"}  ${goal}`)
}
