import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as JobStore from "../../../src/service/JobStore.js"
import { conformance, job } from "./conformance.js"

conformance("JobStore.layerMemory", JobStore.layerMemory)

describe("JobStore.layerMemory", () => {
  it.effect("each build is a new, empty store", () =>
    Effect.gen(function*() {
      yield* JobStore.JobStore.pipe(
        Effect.flatMap((store) => store.insert(job("job_a", 1), [{ input: "x" }])),
        Effect.provide(JobStore.layerMemory)
      )
      const found = yield* JobStore.JobStore.pipe(
        Effect.flatMap((store) => store.get("job_a")),
        Effect.provide(JobStore.layerMemory)
      )
      expect(found).toBeUndefined()
    }))
})
