/**
 * Results as they complete, from a `Stream` source.
 *
 * `Batch.stream` pulls its input only as permits free up, so a source of any
 * size runs in bounded memory, and emits each `TaskResult` the moment its item
 * settles (completion order, not input order; `index` says which item it was).
 * It is an ordinary `Stream`: consume it with `Stream.runForEach`, or stop it
 * with `Stream.take` — the batch is then interrupted, calls in flight included,
 * and nothing more is pulled from the source. Its `BatchReport` goes to
 * `onReport` when the batch ends: the final one, or what had settled by the
 * time the stream was stopped.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Random, Stream } from "effect"
import { Batch, BatchReport } from "effect-batch"

/** A call taking 1–10 ms; counts calls started and calls interrupted mid-flight. */
const counters = { started: 0, interrupted: 0 }
const embed = (n: number) =>
  Effect.gen(function*() {
    counters.started++
    yield* Effect.sleep(`${yield* Random.nextIntBetween(1, 11)} millis`)
    return n * 2
  }).pipe(Effect.onInterrupt(() => Effect.sync(() => counters.interrupted++)))

const everything = Effect.gen(function*() {
  yield* Console.log("Batch.stream over Stream.range(1, 10_000), concurrency 64")
  const start = Date.now()
  let count = 0
  let succeeded = 0
  yield* Batch.stream(Stream.range(1, 10_000), embed, {
    concurrency: 64,
    onReport: (report, ending) => Console.log(`the batch ${ending}:\n${BatchReport.format(report)}`)
  }).pipe(
    Stream.runForEach((result) =>
      Effect.gen(function*() {
        count++
        if (result._tag === "Succeeded") succeeded++
        if (count % 1_000 === 0) {
          yield* Console.log(`  ${String(count).padStart(6)} results  ${succeeded} succeeded  ` +
            `latest: item ${String(result.index).padStart(4)}  +${Date.now() - start} ms`)
        }
      })
    )
  )
})

const firstFew = Effect.gen(function*() {
  counters.started = 0
  counters.interrupted = 0
  yield* Console.log("\nStream.take(100) over a source of 1 000 000 items")
  const start = Date.now()
  let snapshot: BatchReport.BatchReport | undefined
  const first = yield* Batch.stream(Stream.range(1, 1_000_000), embed, {
    concurrency: 64,
    onReport: (report) => Effect.sync(() => (snapshot = report))
  }).pipe(
    Stream.take(100),
    Stream.runCollect
  )
  yield* Console.log(`  took ${first.length} results in ${Date.now() - start} ms; the batch stopped there:`)
  yield* Console.log(`  ${counters.started} calls started, ${counters.interrupted} interrupted in flight, ` +
    `${1_000_000 - counters.started} items never pulled`)
  yield* Console.log(`  its report (interrupted): ${snapshot?.succeeded} succeeded, ${snapshot?.attempts} attempts`)
})

NodeRuntime.runMain(Effect.zipRight(everything, firstFew))
