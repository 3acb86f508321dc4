// One measurement in its own process: `node child.mjs <runner> <items>`.
// Prints one JSON line: { runner, items, ms, maxRssMb, done }. Tasks are no-ops that yield once,
// so this measures scheduling overhead only, not IO.
import { Effect, Stream } from "effect"
import pLimit from "p-limit"
import pMap from "p-map"
import { Batch } from "../../dist/index.js"

const [runner, sizeText] = process.argv.slice(2)
const n = Number(sizeText)
const concurrency = 100
const effectTask = (x) => Effect.as(Effect.yieldNow(), x)
const promiseTask = async (x) => {
  await null
  return x
}

const runners = {
  "Batch.run": async () => {
    const items = Array.from({ length: n }, (_, i) => i)
    const { report } = await Effect.runPromise(Batch.run(items, effectTask, { concurrency }))
    return report.succeeded
  },
  // The same with BatchMetrics recorded (issue #14: within 20 % of Batch.run) and with spans (for the record).
  "Batch.run+metrics": async () => {
    const items = Array.from({ length: n }, (_, i) => i)
    const { report } = await Effect.runPromise(Batch.run(items, effectTask, { concurrency, metrics: true }))
    return report.succeeded
  },
  "Batch.run+spans": async () => {
    const items = Array.from({ length: n }, (_, i) => i)
    const { report } = await Effect.runPromise(Batch.run(items, effectTask, { concurrency, spans: true }))
    return report.succeeded
  },
  "Batch.stream": () =>
    Effect.runPromise(
      Batch.stream(Stream.range(0, n - 1), effectTask, { concurrency }).pipe(
        Stream.runFold(0, (count, result) => (result._tag === "Succeeded" ? count + 1 : count))
      )
    ),
  "Effect.forEach": async () => {
    const items = Array.from({ length: n }, (_, i) => i)
    const values = await Effect.runPromise(Effect.forEach(items, effectTask, { concurrency }))
    return values.length
  },
  "p-limit": async () => {
    const limit = pLimit(concurrency)
    const values = await Promise.all(Array.from({ length: n }, (_, i) => limit(() => promiseTask(i))))
    return values.length
  },
  "p-map": async () => {
    const values = await pMap(Array.from({ length: n }, (_, i) => i), promiseTask, { concurrency })
    return values.length
  }
}

const start = performance.now()
const done = await runners[runner]()
const ms = performance.now() - start
const maxRssMb = process.resourceUsage().maxRSS / 1024
console.log(JSON.stringify({ runner, items: n, ms, maxRssMb, done }))
