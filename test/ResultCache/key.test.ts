import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import { createHash } from "node:crypto"
import * as ResultCache from "../../src/ResultCache.js"

/** The same JSON value with every object's fields inserted in reverse order. */
const reversedFields = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(reversedFields)
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).reverse().map((k) => [k, reversedFields((value as Record<string, unknown>)[k])]))
  }
  return value
}

const fixed = { model: "gpt-4o-mini", params: { temperature: 0, max_tokens: 256 }, input: "Summarise: Ünïcödé ✓" }

describe("ResultCache.key", () => {
  it("is stable: a fixed input has a fixed key", () => {
    // Cross-checked with: printf '%s' '<the canonical JSON below>' | sha256sum
    expect(ResultCache.canonicalJson(fixed)).toBe(
      "{\"input\":\"Summarise: Ünïcödé ✓\",\"model\":\"gpt-4o-mini\",\"params\":{\"max_tokens\":256,\"temperature\":0}}"
    )
    expect(ResultCache.key(fixed)).toBe("8cc98bdddf34106a61d08c685e37bb6689e2cc805b657f890f3861d6201cd33a")
  })

  it.prop("is the SHA-256 of the canonical JSON, in 64 lowercase hex digits", [FastCheck.jsonValue()], ([value]) => {
    const key = ResultCache.key(value)
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    expect(key).toBe(createHash("sha256").update(ResultCache.canonicalJson(value), "utf8").digest("hex"))
  })

  it.prop("the order of object fields does not matter, at any depth", [FastCheck.jsonValue()], ([value]) => {
    expect(ResultCache.key(reversedFields(value))).toBe(ResultCache.key(value))
  })

  it.prop("the canonical JSON is JSON for the same value", [FastCheck.jsonValue()], ([value]) => {
    expect(JSON.parse(ResultCache.canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)))
  })

  it.prop(
    "the order of array elements matters",
    [FastCheck.uniqueArray(FastCheck.jsonValue(), { minLength: 2, maxLength: 6, selector: (v) => JSON.stringify(v) })],
    ([items]) => {
      expect(ResultCache.key({ input: [...items].reverse() })).not.toBe(ResultCache.key({ input: items }))
    }
  )

  it("a different model, parameter or input gives a different key", () => {
    const base = ResultCache.key(fixed)
    const variants = [
      { ...fixed, model: "gpt-4o" },
      { ...fixed, params: { ...fixed.params, temperature: 0.2 } },
      { ...fixed, params: { ...fixed.params, top_p: 1 } },
      { ...fixed, params: { temperature: 0 } },
      { ...fixed, input: "Summarise: Unicode ✓" },
      { model: fixed.model, input: fixed.input, parameters: fixed.params }
    ]
    const keys = variants.map(ResultCache.key)
    expect(keys).not.toContain(base)
    expect(new Set(keys).size).toBe(variants.length)
  })

  it("tells apart values that print alike", () => {
    expect(ResultCache.key(1)).not.toBe(ResultCache.key("1"))
    expect(ResultCache.key(null)).not.toBe(ResultCache.key("null"))
    expect(ResultCache.key([1, [2]])).not.toBe(ResultCache.key([[1], 2]))
    expect(ResultCache.key({ a: "b" })).not.toBe(ResultCache.key({ "a\":\"b": "" }))
  })

  it("follows JSON: undefined fields are dropped, undefined elements are null, toJSON is used", () => {
    expect(ResultCache.key({ a: 1, b: undefined })).toBe(ResultCache.key({ a: 1 }))
    expect(ResultCache.key([undefined, 1])).toBe(ResultCache.key([null, 1]))
    expect(ResultCache.canonicalJson({ at: new Date(0) })).toBe("{\"at\":\"1970-01-01T00:00:00.000Z\"}")
    expect(ResultCache.canonicalJson(-0)).toBe("0")
    const shared = { x: 1 }
    expect(ResultCache.canonicalJson({ b: shared, a: shared })).toBe("{\"a\":{\"x\":1},\"b\":{\"x\":1}}")
  })

  it("rejects a function, naming its path", () => {
    const parts = { model: "m", params: { tools: [{ name: "search", run: () => 1 }] } }
    expect(() => ResultCache.key(parts)).toThrow("ResultCache.key: cannot hash a function at $.params.tools[0].run")
    expect(() => ResultCache.key({ "top-p": () => 0 })).toThrow("a function at $[\"top-p\"]")
    expect(() => ResultCache.key(() => 0)).toThrow("a function at $ ")
  })

  it("rejects symbols, bigints, non-finite numbers, Maps, Sets and cycles, naming the path", () => {
    const cyclic: Record<string, unknown> = { a: [] }
    ;(cyclic.a as Array<unknown>).push(cyclic)
    const cases: ReadonlyArray<readonly [unknown, string]> = [
      [{ s: Symbol("x") }, "a symbol at $.s"],
      [{ n: [1, 2n] }, "a bigint at $.n[1]"],
      [{ t: Number.NaN }, "NaN at $.t"],
      [{ t: Number.POSITIVE_INFINITY }, "Infinity at $.t"],
      [{ m: new Map([["a", 1]]) }, "a Map at $.m"],
      [{ m: new Set([1]) }, "a Set at $.m"],
      [cyclic, "a cycle at $.a[0]"],
      [undefined, "undefined at $"]
    ]
    for (const [parts, message] of cases) {
      expect(() => ResultCache.key(parts)).toThrow(`ResultCache.key: cannot hash ${message}`)
    }
  })
})
