/**
 * Runs a task over 20 items with `Batch.run` and prints every item's outcome.
 *
 * One item fails for good (`TaskError.Permanent`: never retried), one fails
 * once with a `Transient` error and recovers on its second attempt. The batch
 * itself never fails: each item gets its own `TaskResult`, in input order,
 * and the `BatchReport` sums it up. `Batch.forEach` is the fail-fast form:
 * the first final failure fails the effect and interrupts what is in flight.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { Batch, BatchReport, RetryPolicy, TaskError } from "effect-batch"

const items = Array.from({ length: 20 }, (_, i) => `doc-${i}`)

// Item 7 is rejected for good; item 12 fails once, then succeeds.
const failedOnce = new Set<number>()
const summarize = (doc: string, index: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep(`${20 + (index % 5) * 10} millis`)
    if (index === 7) {
      return yield* new TaskError.Permanent({ message: `${doc}: 400 invalid document`, status: 400 })
    }
    if (index === 12 && !failedOnce.has(index)) {
      failedOnce.add(index)
      return yield* new TaskError.Transient({ message: `${doc}: connection reset`, code: "ECONNRESET" })
    }
    return `summary of ${doc}`
  })

const runAll = Effect.gen(function*() {
  const { results, report } = yield* Batch.run(items, summarize, { concurrency: 4 })
  for (const result of results) {
    const detail = result._tag === "Succeeded"
      ? result.value
      : result._tag === "Failed"
        ? `${result.errorClass}: ${result.error.message}`
        : result.reason
    yield* Console.log(`#${String(result.index).padStart(2)}  ${result._tag.padEnd(9)}  attempts ${result.attempts}  ${detail}`)
  }
  yield* Console.log(`\n${BatchReport.format(report)}`)
})

const failFast = Effect.gen(function*() {
  let started = 0
  const error = yield* Batch.forEach(
    items,
    (doc, index) => Effect.sync(() => started++).pipe(Effect.zipRight(summarize(doc, index))),
    { concurrency: 4 }
  ).pipe(Effect.flip)
  yield* Console.log(`\nBatch.forEach failed fast with ${error._tag}: "${error.message}"`)
  yield* Console.log(`  ${started} of ${items.length} items had started; the rest were never run`)
})

const program = Effect.gen(function*() {
  yield* Console.log("Batch.run: every item settles, results in input order\n")
  yield* runAll
  yield* failFast
}).pipe(
  // Short backoff so the transient retry shows up quickly.
  Effect.provide(RetryPolicy.layer({ base: "50 millis", maxDelay: "1 second" }))
)

NodeRuntime.runMain(program)
