import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import { conformance } from "./conformance.js"

conformance("CheckpointStore.layerMemory", CheckpointStore.layerMemory)

describe("CheckpointStore.layerMemory", () => {
  it.effect("each build is a new, empty store", () =>
    Effect.gen(function*() {
      yield* CheckpointStore.CheckpointStore.pipe(
        Effect.flatMap((store) => store.open("a", { fingerprint: "fp" })),
        Effect.provide(CheckpointStore.layerMemory)
      )
      const runs = yield* CheckpointStore.CheckpointStore.pipe(
        Effect.flatMap((store) => store.list),
        Effect.provide(CheckpointStore.layerMemory)
      )
      expect(runs).toEqual([])
    }))
})
