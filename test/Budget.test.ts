import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Batch from "../src/Batch.js"
import * as Budget from "../src/Budget.js"
import * as TaskError from "../src/TaskError.js"
import { runOnTestClock } from "./support/TestTime.js"

describe("Budget", () => {
  it("prices usage per million tokens, cached input at its own price", () => {
    const prices = Budget.defaultPrices["gpt-4o-mini"]!
    expect(Budget.costOf(prices, { inputTokens: 1_000_000, outputTokens: 0 })).toBeCloseTo(0.15, 10)
    expect(Budget.costOf(prices, { inputTokens: 1_000, cachedInputTokens: 400, outputTokens: 500 }))
      .toBeCloseTo((600 * 0.15 + 400 * 0.075 + 500 * 0.6) / 1e6, 12)
    // Cached tokens beyond the input are capped: they are part of the input.
    expect(Budget.costOf({ input: 1, output: 0 }, { inputTokens: 10, cachedInputTokens: 50, outputTokens: 0 })).toBeCloseTo(10 / 1e6, 12)
  })

  it("overrides the price table, and names a bad price", () => {
    const table = Budget.pricesWith({ "my-model": { input: 1, output: 2 } })
    expect(table["my-model"]).toEqual({ input: 1, output: 2 })
    expect(table["gpt-4o"]).toEqual(Budget.defaultPrices["gpt-4o"])
    expect(() => Budget.pricesWith({ bad: { input: -1, output: 0 } })).toThrow(/price input of model "bad"/)
    expect(() => Budget.unsafeMake({ maxCost: Number.NaN })).toThrow(/maxCost/)
  })

  it("projects the cost of what is left from the average so far", () => {
    expect(Budget.projectedCost(2, 10, 50)).toBeCloseTo(10, 12)
    expect(Budget.projectedCost(0, 0, 50)).toBe(0)
    expect(Budget.projectedCost(3, 60, 50)).toBe(3)
  })

  it("reserves up to the cap, settles to actual cost, releases failures", () => {
    const ledger = Budget.unsafeMake({ maxCost: 1 })
    expect(ledger.unsafeReserve(0.4)).toBe(true)
    expect(ledger.unsafeReserve(0.6)).toBe(true)
    expect(ledger.unsafeReserve(0.01)).toBe(false)
    expect(ledger.unsafeSnapshot().exceeded).toMatchObject({ _tag: "BudgetExceeded", maxCost: 1, reserved: 1, next: 0.01 })
    ledger.unsafeSettle(0.4, 0.1)
    ledger.unsafeRelease(0.6)
    expect(ledger.unsafeSnapshot()).toMatchObject({ spent: 0.1, reserved: 0 })
    expect(ledger.unsafeReserve(0.9)).toBe(true)
  })

  it.effect("a capped batch stops admitting: in-flight items finish and settle, the rest are Skipped(budget)", () =>
    Effect.gen(function*() {
      const items = Array.from({ length: 20 }, (_, i) => i)
      let calls = 0
      // Each call is estimated at $0.10 and really costs $0.05: the cap of $0.50 fits 5 estimates at
      // once; settling frees room as calls finish.
      const task = (n: number) => Effect.sleep("100 millis").pipe(Effect.as(n), Effect.tap(() => void calls++))
      const { report, results } = yield* runOnTestClock(
        Batch.run(items, task, {
          concurrency: 4,
          estimate: () => ({ tokens: 100, usd: 0.1 }),
          settle: () => ({ tokens: 50, usd: 0.05 })
        }).pipe(Effect.provide(Budget.layer({ maxCost: 0.5 })))
      )
      const succeeded = results.filter((r) => r._tag === "Succeeded").length
      const skipped = results.filter((r) => r._tag === "Skipped")
      expect(succeeded + skipped.length).toBe(20)
      expect(skipped.every((r) => r._tag === "Skipped" && r.reason === "budget")).toBe(true)
      expect(calls).toBe(succeeded)
      // Spent + estimates in flight never passed the cap: 0.05 × succeeded ≤ 0.5.
      expect(report.cost.actual).toBeCloseTo(0.05 * succeeded, 10)
      expect(report.cost.actual).toBeLessThanOrEqual(0.5)
      expect(succeeded).toBeGreaterThanOrEqual(5)
      expect(skipped.length).toBeGreaterThan(0)
      expect(report.tokens).toEqual({ estimated: 100 * succeeded, actual: 50 * succeeded })
      expect(report.budgetExceeded?._tag).toBe("BudgetExceeded")
      expect(report.skippedBy.budget).toBe(skipped.length)
    }))

  it.effect("one budget layer is shared by the batches under it", () =>
    Effect.gen(function*() {
      const batch = Batch.run([1, 2, 3], (n: number) => Effect.succeed(n), { estimate: () => ({ usd: 0.25 }) })
      const [first, second] = yield* Effect.all([batch, batch]).pipe(Effect.provide(Budget.layer({ maxCost: 1 })))
      expect(first.report.succeeded).toBe(3)
      expect(second.report.succeeded).toBe(1)
      expect(second.report.skippedBy.budget).toBe(2)
    }))

  it.effect("failed attempts cost nothing and give their reservation back", () =>
    Effect.gen(function*() {
      const task = (n: number) => (n % 2 === 0 ? Effect.fail(new TaskError.Permanent({})) : Effect.succeed(n))
      const { report } = yield* Batch.run([0, 1, 2, 3, 4, 5], task, { estimate: () => ({ usd: 0.2 }) }).pipe(
        Effect.provide(Budget.layer({ maxCost: 0.6 }))
      )
      expect(report.succeeded).toBe(3)
      expect(report.failed).toBe(3)
      expect(report.cost.actual).toBeCloseTo(0.6, 10)
      expect(report.budgetExceeded).toBeUndefined()
    }))

  it.effect("Batch.forEach fails with BudgetExceeded", () =>
    Effect.gen(function*() {
      const error = yield* Batch.forEach([1, 2, 3, 4], (n: number) => Effect.succeed(n), {
        concurrency: 1,
        estimate: () => ({ usd: 1 })
      }).pipe(Effect.provide(Budget.layer({ maxCost: 2 })), Effect.flip)
      expect(error._tag).toBe("BudgetExceeded")
      expect(error).toMatchObject({ maxCost: 2, spent: 2, next: 1 })
    }))

  it.effect("without a layer every batch has its own uncapped ledger", () =>
    Effect.gen(function*() {
      const { report } = yield* Batch.run([1, 2], (n: number) => Effect.succeed(n), { estimate: () => ({ usd: 1e6 }) })
      expect(report.succeeded).toBe(2)
      expect(report.cost).toEqual({ estimated: 2e6, actual: 2e6 })
    }))
})
