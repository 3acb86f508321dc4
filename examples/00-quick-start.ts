/**
 * The README's quick start, whole: ten items through `Batch.run`, one of
 * them rejected for good, one failing once before it succeeds. Needs only
 * `effect` and `effect-batch`.
 */
import { Console, Effect } from "effect"
import { Batch, BatchReport, RetryPolicy, TaskError } from "effect-batch"

// A task is any Effect. Item 3 is rejected for good (never retried); item 5 fails once, then succeeds.
let flaky = true
const summarize = (doc: string, index: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep("20 millis")
    if (index === 3) return yield* new TaskError.Permanent({ message: `${doc}: 400 invalid document`, status: 400 })
    if (index === 5 && flaky) {
      flaky = false
      return yield* new TaskError.Transient({ message: `${doc}: connection reset` })
    }
    return `summary of ${doc}`
  })

const program = Effect.gen(function*() {
  const docs = Array.from({ length: 10 }, (_, i) => `doc-${i}`)
  // One TaskResult per item, in input order; one item's failure never fails the batch.
  const { report, results } = yield* Batch.run(docs, summarize, { concurrency: 4 })
  for (const result of results) {
    const detail = result._tag === "Succeeded" ? result.value : result._tag === "Failed" ? result.error.message : result.reason
    yield* Console.log(`#${result.index} ${result._tag} after ${result.attempts} attempt(s): ${detail}`)
  }
  yield* Console.log(BatchReport.format(report))
}).pipe(Effect.provide(RetryPolicy.layer({ base: "50 millis" })))

Effect.runPromise(program)
