/**
 * The contract every `ResultCache` backend meets, run by each backend's test
 * file. Tests share one store per suite, so each uses its own keys and
 * measures `size` as a difference.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, FastCheck, Layer, Option } from "effect"
import * as ResultCache from "../../src/ResultCache.js"
import * as SqlResultCache from "../../src/sql/SqlResultCache.js"

export interface Options {
  /** Reports the suite as skipped (e.g. no database configured). */
  readonly skip?: boolean
  /** The store outlives a build of its layer: test that a fresh build reads what an earlier one wrote. */
  readonly persistent?: boolean
}

/** What a stored value must come back as. */
const asJson = (value: unknown): unknown => JSON.parse(JSON.stringify(value))

export const nested = {
  text: "héllo — 日本語 🎉 \"quoted\" \\ back\nslash",
  nul: "a\u0000b",
  loneSurrogate: "x\ud800y",
  empty: "",
  numbers: [0, -1.5, 1e300, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 5e-324],
  flags: [true, false],
  nothing: null,
  deep: { a: [{ b: [[], {}, [null, { c: "d" }]] }] },
  unusualKeys: { "with spaces and ünïcödé": 1, "": "empty key" }
}

export const conformance = (name: string, store: Layer.Layer<ResultCache.ResultCache, unknown>, options: Options = {}) =>
  describe.skipIf(options.skip === true)(name, () => {
    layer(store, { excludeTestServices: true })((it) => {
      it.effect("a key never set is a miss", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          expect(yield* cache.get("miss/never-set")).toEqual(Option.none())
          expect((yield* cache.getMany(["miss/a", "miss/b"])).size).toBe(0)
        }))

      it.effect("a nested JSON value comes back equal", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          yield* cache.set("roundtrip/nested", nested)
          expect(yield* cache.get("roundtrip/nested")).toEqual(Option.some(nested))
          for (const value of ["plain string", 42, -0.5, true, null, [], {}]) {
            yield* cache.set("roundtrip/scalar", value)
            expect(yield* cache.get("roundtrip/scalar")).toEqual(Option.some(value))
          }
        }))

      it.effect.prop(
        "any JSON value comes back as JSON.parse(JSON.stringify(value))",
        { value: FastCheck.jsonValue({ maxDepth: 4 }) },
        ({ value }) =>
          Effect.gen(function*() {
            const cache = yield* ResultCache.ResultCache
            yield* cache.set("roundtrip/property", value)
            expect(yield* cache.get("roundtrip/property")).toEqual(Option.some(asJson(value)))
          }),
        { fastCheck: { numRuns: 40 } }
      )

      it.effect("stores a copy: mutating the value set or the value read changes nothing stored", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          const value = { list: [1, 2], inner: { x: "y" } }
          yield* cache.set("copy/value", value)
          value.list.push(3)
          value.inner.x = "changed"
          const read = Option.getOrThrow(yield* cache.get("copy/value")) as typeof value
          expect(read).toEqual({ list: [1, 2], inner: { x: "y" } })
          read.list.push(4)
          expect(yield* cache.get("copy/value")).toEqual(Option.some({ list: [1, 2], inner: { x: "y" } }))
        }))

      it.effect("drops undefined fields, as JSON does", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          yield* cache.set("json/undefined", { a: 1, b: undefined, c: [undefined] })
          expect(yield* cache.get("json/undefined")).toEqual(Option.some({ a: 1, c: [null] }))
        }))

      it.effect("set replaces the value and keeps one entry", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          yield* cache.set("overwrite/k", { v: 1 })
          const before = yield* cache.size
          yield* cache.set("overwrite/k", ["second", 2])
          expect(yield* cache.get("overwrite/k")).toEqual(Option.some(["second", 2]))
          expect(yield* cache.size).toBe(before)
        }))

      it.effect("delete forgets a key; deleting a missing key is a no-op", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          yield* cache.set("delete/k", "v")
          yield* cache.set("delete/other", "w")
          yield* cache.delete("delete/k")
          expect(yield* cache.get("delete/k")).toEqual(Option.none())
          expect(yield* cache.get("delete/other")).toEqual(Option.some("w"))
          const size = yield* cache.size
          yield* cache.delete("delete/k")
          yield* cache.delete("delete/never-set")
          expect(yield* cache.size).toBe(size)
        }))

      it.effect("size counts entries", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          const before = yield* cache.size
          yield* cache.set("size/a", 1)
          yield* cache.set("size/b", 2)
          yield* cache.set("size/c", 3)
          expect(yield* cache.size).toBe(before + 3)
          yield* cache.delete("size/b")
          expect(yield* cache.size).toBe(before + 2)
        }))

      it.effect("many keys: 1 200 entries, each read back by get and all by getMany", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          const keys = Array.from({ length: 1200 }, (_, i) => `many/${i}`)
          const before = yield* cache.size
          yield* Effect.forEach(keys, (key, i) => cache.set(key, { i, key }), { concurrency: 8, discard: true })
          expect(yield* cache.size).toBe(before + 1200)
          const values = yield* Effect.forEach(keys, (key) => cache.get(key), { concurrency: 8 })
          expect(values).toEqual(keys.map((key, i) => Option.some({ i, key })))
          const found = yield* cache.getMany([...keys, "many/missing", "many/0", "many/1199"])
          expect(found.size).toBe(1200)
          expect(found.get("many/777")).toEqual({ i: 777, key: "many/777" })
          expect(found.has("many/missing")).toBe(false)
        }))

      it.effect("concurrent sets of one key end with one of the values and one entry", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          const before = yield* cache.size
          const writers = Array.from({ length: 20 }, (_, writer) => ({ writer, payload: "x".repeat(writer) }))
          yield* Effect.forEach(writers, (value) => cache.set("race/k", value), { concurrency: "unbounded", discard: true })
          const stored = Option.getOrThrow(yield* cache.get("race/k"))
          expect(writers).toContainEqual(stored)
          expect(yield* cache.size).toBe(before + 1)
        }))

      it.effect("a value that is not JSON fails set with a ResultCacheError and leaves the entry alone", () =>
        Effect.gen(function*() {
          const cache = yield* ResultCache.ResultCache
          yield* cache.set("invalid/k", "kept")
          const cyclic: Record<string, unknown> = {}
          cyclic.self = cyclic
          for (const value of [undefined, () => 1, 10n, cyclic]) {
            const error = yield* Effect.flip(cache.set("invalid/k", value))
            expect(error).toBeInstanceOf(ResultCache.ResultCacheError)
            expect(error).toMatchObject({ _tag: "ResultCacheError", operation: "set", key: "invalid/k" })
            expect(error.message).toMatch(/^ResultCache\.set \(key invalid\/k\) failed: /)
          }
          expect(yield* cache.get("invalid/k")).toEqual(Option.some("kept"))
        }))

      if (options.persistent === true) {
        it.effect("a fresh build of the layer reads what an earlier build wrote", () =>
          Effect.gen(function*() {
            yield* ResultCache.ResultCache.pipe(
              Effect.flatMap((cache) => cache.set("persist/k", nested)),
              Effect.provide(store)
            )
            const read = yield* ResultCache.ResultCache.pipe(
              Effect.flatMap((cache) => cache.get("persist/k")),
              Effect.provide(store)
            )
            expect(read).toEqual(Option.some(nested))
          }))
      }
    })
  })

/**
 * The contract of `SqlResultCache.layer` on the client `client` provides: the common
 * suite on table `table`, plus the SQL-only checks.
 */
export const sqlConformance = (
  name: string,
  client: Layer.Layer<SqlClient, unknown>,
  options: { readonly table: string, readonly skip?: boolean }
) => {
  const store = SqlResultCache.layer({ table: options.table }).pipe(Layer.provide(client))
  conformance(name, store, { persistent: true, ...(options.skip === undefined ? {} : { skip: options.skip }) })

  describe.skipIf(options.skip === true)(`${name}: SqlResultCache.layer`, () => {
    it("a table name that is not a plain identifier throws, naming the option and the value", () => {
      for (const table of ["results; DROP TABLE users", "", "1results", "my-cache", "public.results", "\"quoted\"", "a".repeat(64)]) {
        expect(() => SqlResultCache.layer({ table })).toThrow(/^SqlResultCache\.layer: table must be a plain identifier/)
        expect(() => SqlResultCache.layer({ table })).toThrow(JSON.stringify(table))
      }
      expect(() => SqlResultCache.layer({ table: `A_${"b".repeat(61)}` })).not.toThrow()
    })

    it.live("building twice on an existing table keeps its rows", () =>
      Effect.gen(function*() {
        const table = `${options.table}_twice`
        const twice = SqlResultCache.layer({ table }).pipe(Layer.provide(client))
        yield* ResultCache.ResultCache.pipe(Effect.flatMap((cache) => cache.set("k", 1)), Effect.provide(twice))
        const size = yield* ResultCache.ResultCache.pipe(Effect.flatMap((cache) => cache.size), Effect.provide(twice))
        expect(size).toBe(1)
      }).pipe(Effect.ensuring(dropTable(`${options.table}_twice`).pipe(Effect.provide(client), Effect.orDie))))

    it.live("a stored value that is not JSON fails get and getMany with a ResultCacheError", () =>
      Effect.gen(function*() {
        const cache = yield* ResultCache.ResultCache
        const sql = yield* SqlClient
        yield* cache.set("ok", 1)
        yield* sql`UPDATE ${sql(`${options.table}_corrupt`)} SET value = ${"{not json"} WHERE key = ${"ok"}`
        const error = yield* Effect.flip(cache.get("ok"))
        expect(error).toMatchObject({ _tag: "ResultCacheError", operation: "get", key: "ok" })
        expect(error.cause).toBeInstanceOf(SyntaxError)
        expect(yield* Effect.flip(cache.getMany(["ok"]))).toMatchObject({ operation: "getMany", key: "ok" })
      }).pipe(
        Effect.provide(SqlResultCache.layer({ table: `${options.table}_corrupt` }).pipe(Layer.provideMerge(client))),
        Effect.ensuring(dropTable(`${options.table}_corrupt`).pipe(Effect.provide(client), Effect.orDie))
      ))

    it.live("when the table is gone, every operation fails with a ResultCacheError carrying the SqlError", () =>
      Effect.gen(function*() {
        const cache = yield* ResultCache.ResultCache
        yield* dropTable(`${options.table}_gone`)
        const errors = [
          yield* Effect.flip(cache.get("k")),
          yield* Effect.flip(cache.getMany(["k"])),
          yield* Effect.flip(cache.set("k", 1)),
          yield* Effect.flip(cache.delete("k")),
          yield* Effect.flip(cache.size)
        ]
        expect(errors.map((e) => [e.operation, e.key])).toEqual([
          ["get", "k"], ["getMany", undefined], ["set", "k"], ["delete", "k"], ["size", undefined]
        ])
        for (const error of errors) expect(error.cause).toMatchObject({ _tag: "SqlError" })
      }).pipe(Effect.provide(SqlResultCache.layer({ table: `${options.table}_gone` }).pipe(Layer.provideMerge(client)))))
  })
}

/** Drops `table` if it exists. */
export const dropTable = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
  })
