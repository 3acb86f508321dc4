/**
 * Planning provider batches (the Batch API mode's shards and custom_ids):
 * properties over random lines, and the errors.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { customId, type Line, LineTooLarge, parseCustomId, plan, type ShardLimits } from "../../src/llm/internal/batchShards.js"

const limitsArb = fc.record({
  maxRequests: fc.integer({ min: 1, max: 12 }),
  maxBytes: fc.integer({ min: 40, max: 400 }),
  maxTokens: fc.option(fc.integer({ min: 30, max: 300 }), { nil: undefined })
})

/** Lines that each fit a shard alone under `limits`. */
const linesArb = (limits: ShardLimits) =>
  fc.array(
    fc.record({
      model: fc.constantFrom("m-a", "m-b", "m-c"),
      bytes: fc.integer({ min: 1, max: limits.maxBytes }),
      tokens: fc.integer({ min: 0, max: limits.maxTokens ?? 500 })
    }),
    { maxLength: 120 }
  ).map((lines) => lines.map((line, index): Line => ({ index, ...line })))

const cases = limitsArb.chain((limits) => linesArb(limits).map((lines) => ({ limits, lines })))

describe("batch shards", () => {
  it("every line is in exactly one shard of its own model, in input order, each shard within every limit", () =>
    fc.assert(fc.property(cases, ({ limits, lines }) => {
      const shards = plan(lines, limits)
      const seen = shards.flatMap((shard) => shard.indices)
      expect([...seen].sort((a, b) => a - b)).toEqual(lines.map((line) => line.index))
      for (const shard of shards) {
        expect(shard.indices.length).toBeGreaterThan(0)
        expect(shard.indices.length).toBeLessThanOrEqual(limits.maxRequests)
        expect(shard.indices.every((i) => lines[i]!.model === shard.model)).toBe(true)
        expect(shard.indices).toEqual([...shard.indices].sort((a, b) => a - b))
        const bytes = shard.indices.reduce((sum, i) => sum + lines[i]!.bytes, 0)
        const tokens = shard.indices.reduce((sum, i) => sum + lines[i]!.tokens, 0)
        expect([shard.bytes, shard.tokens]).toEqual([bytes, tokens])
        expect(bytes).toBeLessThanOrEqual(limits.maxBytes)
        if (limits.maxTokens !== undefined) expect(tokens).toBeLessThanOrEqual(limits.maxTokens)
      }
    })))

  it("packs greedily: a model's shards follow one another, and each was cut only because its next line did not fit", () =>
    fc.assert(fc.property(cases, ({ limits, lines }) => {
      const shards = plan(lines, limits)
      for (const model of ["m-a", "m-b", "m-c"]) {
        const ofModel = shards.filter((shard) => shard.model === model).sort((a, b) => a.indices[0]! - b.indices[0]!)
        // Consecutive: together they are the model's lines in input order.
        expect(ofModel.flatMap((shard) => shard.indices)).toEqual(lines.filter((l) => l.model === model).map((l) => l.index))
        for (let s = 0; s < ofModel.length - 1; s++) {
          const shard = ofModel[s]!
          const next = lines[ofModel[s + 1]!.indices[0]!]!
          const fits = shard.indices.length < limits.maxRequests && shard.bytes + next.bytes <= limits.maxBytes &&
            (limits.maxTokens === undefined || shard.tokens + next.tokens <= limits.maxTokens)
          expect(fits).toBe(false)
        }
      }
    })))

  it("a line over a limit alone is refused, naming the item and the limit; bad limits too", () => {
    expect(() => plan([{ index: 7, model: "m", bytes: 501, tokens: 1 }], { maxRequests: 10, maxBytes: 500 })).toThrow(LineTooLarge)
    expect(() => plan([{ index: 7, model: "m", bytes: 501, tokens: 1 }], { maxRequests: 10, maxBytes: 500 }))
      .toThrow("item 7: 501 bytes, and a shard holds 500")
    expect(() => plan([{ index: 3, model: "m", bytes: 10, tokens: 900 }], { maxRequests: 10, maxBytes: 500, maxTokens: 800 }))
      .toThrow("item 3: about 900 tokens, and a shard holds 800")
    expect(() => plan([], { maxRequests: 0, maxBytes: 500 })).toThrow(/shard limits must be ≥ 1/)
  })

  it("a custom_id names its run, round and item, in at most 64 characters any provider takes, and parses back", () =>
    fc.assert(fc.property(
      fc.stringMatching(/^[A-Za-z0-9-]{1,32}$/),
      fc.integer({ min: 0, max: 999_999_999 }),
      fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      (runKey, round, index) => {
        const id = customId(runKey, round, index)
        expect(id.length).toBeLessThanOrEqual(64)
        expect(id).toMatch(/^[A-Za-z0-9_-]+$/)
        expect(parseCustomId(id, runKey)).toEqual({ round, index })
        expect(parseCustomId(id, runKey === "other" ? "other2" : "other")).toBeUndefined()
      }
    )))

  it("custom_ids of another run, or not ours at all, parse to nothing; bad parts are refused", () => {
    expect(parseCustomId("run1_0_5", "run2")).toBeUndefined()
    expect(parseCustomId("request-17", "run1")).toBeUndefined()
    expect(parseCustomId("run1_0_5_6", "run1")).toBeUndefined()
    expect(() => customId("has_underscore", 0, 1)).toThrow(/run key is 1–32 letters, digits or -/)
    expect(() => customId("run", -1, 1)).toThrow(/round must be/)
    expect(() => customId("run", 0, 1.5)).toThrow(/index must be a whole number/)
  })
})
