import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as Batch from "../src/Batch.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Idempotency from "../src/Idempotency.js"
import * as ResultCache from "../src/ResultCache.js"
import * as TaskError from "../src/TaskError.js"

describe("Idempotency", () => {
  it("keyOf: 40 hex digits of the item's hash, one per item, never the run id itself", () => {
    const a = Idempotency.keyOf({ runId: "run-1", itemKey: "0:abc" })
    expect(a).toMatch(/^[0-9a-f]{40}$/)
    expect(Idempotency.keyOf({ runId: "run-1", itemKey: "0:abc" })).toBe(a)
    expect(Idempotency.keyOf({ runId: "run-1", itemKey: "1:abc" })).not.toBe(a)
    expect(Idempotency.keyOf({ runId: "run-2", itemKey: "0:abc" })).not.toBe(a)
    expect(a).not.toContain("run-1")
    // The same keys as before the tag moved here, so runs in flight across an upgrade keep theirs.
    expect(a).toBe(ResultCache.key({ runId: "run-1", itemKey: "0:abc" }).slice(0, 40))
  })

  it.effect("key is None outside a checkpointed run; inside one, the item's key, the same when a resumed run calls it again", () =>
    Effect.gen(function*() {
      const seen: Array<Option.Option<string>> = []
      const task = (s: string) => Effect.map(Idempotency.key, (key) => (seen.push(key), s))
      yield* Batch.run(["a", "b"], task)
      expect(seen).toEqual([Option.none(), Option.none()])

      seen.length = 0
      // "b" fails for good in the first run; the resumed run calls it again, under the same key.
      let failB = true
      const flaky = (s: string) =>
        Effect.flatMap(task(s), () => (s === "b" && failB ? Effect.fail(new TaskError.Permanent({ message: "no" })) : Effect.succeed(s)))
      const first = yield* Batch.run(["a", "b"], flaky, { checkpoint: { runId: "r" } })
      expect(first.results.map((r) => r._tag)).toEqual(["Succeeded", "Failed"])
      const expected = ["a", "b"].map((item, index) =>
        Option.some(Idempotency.keyOf({ runId: "r", itemKey: CheckpointStore.itemKeyOf(index, item) })))
      expect(seen).toEqual(expected)

      seen.length = 0
      failB = false
      const resumed = yield* Batch.run(["a", "b"], flaky, { checkpoint: { runId: "r", retryFailed: true } })
      expect(resumed.results.map((r) => r._tag === "Succeeded" && r.source)).toEqual(["checkpoint", "call"])
      expect(seen).toEqual([expected[1]])
    }).pipe(Effect.provide(CheckpointStore.layerMemory)))

  it.effect("keyAt: CurrentItem's key where one is provided, else the CurrentRun's item at the index, else None", () =>
    Effect.gen(function*() {
      expect(yield* Idempotency.keyAt(3)).toEqual(Option.none())
      const run = yield* Idempotency.keyAt(3).pipe(Effect.provideService(Idempotency.CurrentRun, { runId: "job_x" }))
      expect(run).toEqual(Option.some(Idempotency.keyOf({ runId: "job_x", itemKey: "3" })))
      const item = yield* Idempotency.keyAt(3).pipe(
        Effect.provideService(Idempotency.CurrentItem, { runId: "run", itemKey: "k" }),
        Effect.provideService(Idempotency.CurrentRun, { runId: "job_x" })
      )
      expect(item).toEqual(Option.some(Idempotency.keyOf({ runId: "run", itemKey: "k" })))
    }))
})
