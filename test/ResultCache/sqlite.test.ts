import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlClient } from "@effect/sql/SqlClient"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as ResultCache from "../../src/ResultCache.js"
import * as SqlResultCache from "../../src/sql/SqlResultCache.js"
import { sqlConformance } from "./conformance.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-result-cache-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

sqlConformance("SqlResultCache.layer (SQLite)", SqliteClient.layer({ filename: join(dir, "conformance.db") }), {
  table: "result_cache"
})

describe("SqlResultCache.layer (SQLite): across runs", () => {
  /** What the engine does with a cache: look up, call on a miss, store the result. */
  const runBatch = (inputs: ReadonlyArray<string>, calls: { count: number }) =>
    Effect.gen(function*() {
      const cache = yield* ResultCache.ResultCache
      return yield* Effect.forEach(inputs, (input) =>
        Effect.gen(function*() {
          const key = ResultCache.key({ model: "test-model", params: { temperature: 0 }, input })
          const hit = yield* cache.get(key)
          if (Option.isSome(hit)) return { source: "cache", value: hit.value }
          calls.count++
          const value = { answer: input.toUpperCase() }
          yield* cache.set(key, value)
          return { source: "call", value }
        }), { concurrency: 4 })
    })

  it.live("the second run, on a fresh layer over the same file, pays nothing", () =>
    Effect.gen(function*() {
      const store = () => SqlResultCache.layer().pipe(Layer.provide(SqliteClient.layer({ filename: join(dir, "runs.db") })))
      const inputs = ["alpha", "beta", "gamma", "ünïcödé 🎉"]
      const first = { count: 0 }
      const firstResults = yield* runBatch(inputs, first).pipe(Effect.provide(store()))
      expect(first.count).toBe(4)
      expect(firstResults.every((r) => r.source === "call")).toBe(true)

      const second = { count: 0 }
      const secondResults = yield* runBatch(inputs, second).pipe(Effect.provide(store()))
      expect(second.count).toBe(0)
      expect(secondResults).toEqual(firstResults.map((r) => ({ ...r, source: "cache" })))

      const third = { count: 0 }
      yield* runBatch([...inputs, "delta"], third).pipe(Effect.provide(store()))
      expect(third.count).toBe(1)
    }))
})

describe("SqlResultCache.layer (SQLite): names", () => {
  it.live("the client's name transforms do not rename the table or its columns", () =>
    Effect.gen(function*() {
      const cache = yield* ResultCache.ResultCache
      yield* cache.set("k", { a: 1 })
      expect(yield* cache.get("k")).toEqual(Option.some({ a: 1 }))
      const sql = (yield* SqlClient).withoutTransforms()
      const rows = yield* sql<{ key: string, value: string, created_at: string }>`SELECT key, value, created_at FROM plain_name`
      expect(rows).toEqual([{ key: "k", value: "{\"a\":1}", created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/) }])
    }).pipe(Effect.provide(SqlResultCache.layer({ table: "plain_name" }).pipe(Layer.provideMerge(SqliteClient.layer({
      filename: join(dir, "names.db"),
      transformQueryNames: (name) => `renamed_${name}`,
      transformResultNames: (name) => name.replace(/^renamed_/, "")
    }))))))
})
