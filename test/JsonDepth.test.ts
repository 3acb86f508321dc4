/**
 * The nesting bound on JSON input: exact at the boundary, for arrays and
 * objects alike, and safe to ask about far past any stack.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as JsonDepth from "../src/JsonDepth.js"

/** `depth` levels of arrays or objects around a string, built without recursion. */
const nested = (depth: number, kind: "array" | "object"): unknown => {
  let value: unknown = "bottom"
  for (let i = 0; i < depth; i++) value = kind === "array" ? [value] : { deeper: value }
  return value
}

describe("JsonDepth.exceeds", () => {
  it.prop(
    "exceeds max exactly when the levels are more than max",
    [FastCheck.integer({ min: 0, max: 200 }), FastCheck.integer({ min: 0, max: 200 }), FastCheck.constantFrom("array" as const, "object" as const)],
    ([depth, max, kind]) => {
      expect(JsonDepth.exceeds(nested(depth, kind), max)).toBe(depth > max)
    }
  )

  it("counts the deepest branch; scalars are no level; the default is the limit", () => {
    expect(JsonDepth.exceeds({ a: 1, b: [[2]], c: "x" }, 2)).toBe(true)
    expect(JsonDepth.exceeds({ a: 1, b: [[2]], c: "x" }, 3)).toBe(false)
    for (const scalar of ["s", 1, null, true]) expect(JsonDepth.exceeds(scalar, 0)).toBe(false)
    expect(JsonDepth.exceeds(nested(JsonDepth.limit, "array"))).toBe(false)
    expect(JsonDepth.exceeds(nested(JsonDepth.limit + 1, "array"))).toBe(true)
    // Far deeper than JSON.stringify can go.
    expect(JsonDepth.exceeds(JSON.parse("[".repeat(200_000) + "]".repeat(200_000)))).toBe(true)
  })
})
