import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as LimitAlgorithm from "../src/LimitAlgorithm.js"

const ok = (startedAt: number, inFlight: number, latencyMs = 10): LimitAlgorithm.Sample => ({
  startedAt,
  latencyMs,
  inFlight,
  dropped: false
})
const drop = (startedAt: number, inFlight: number, latencyMs = 10): LimitAlgorithm.Sample => ({
  startedAt,
  latencyMs,
  inFlight,
  dropped: true
})

const sampleArbitrary = FastCheck.record({
  startedAt: FastCheck.integer({ min: 0, max: 100_000 }),
  latencyMs: FastCheck.double({ min: 0, max: 10_000, noNaN: true }),
  inFlight: FastCheck.integer({ min: 1, max: 500 }),
  dropped: FastCheck.boolean(),
  providerMs: FastCheck.option(FastCheck.double({ min: 0, max: 10_000, noNaN: true }), { nil: undefined })
})

describe("LimitAlgorithm", () => {
  it.prop(
    "aimd and gradient keep the limit an integer within [min, max] whatever the samples",
    {
      min: FastCheck.integer({ min: 1, max: 20 }),
      span: FastCheck.integer({ min: 0, max: 200 }),
      samples: FastCheck.array(sampleArbitrary, { maxLength: 300 }),
      useGradient: FastCheck.boolean()
    },
    ({ min, samples, span, useGradient }) => {
      const max = min + span
      const algorithm = useGradient
        ? LimitAlgorithm.gradient({ min, max, initial: min })
        : LimitAlgorithm.aimd({ min, max, initial: max })
      for (const limit of LimitAlgorithm.replay<unknown>(algorithm as LimitAlgorithm.LimitAlgorithm<unknown>, samples)) {
        expect(Number.isInteger(limit)).toBe(true)
        expect(limit).toBeGreaterThanOrEqual(min)
        expect(limit).toBeLessThanOrEqual(max)
      }
    }
  )

  describe("aimd", () => {
    it("grows by one per limit's worth of successes taken under load, and not when app-limited", () => {
      const aimd = LimitAlgorithm.aimd({ initial: 10, max: 100 })
      const limits = LimitAlgorithm.replay(aimd, Array.from({ length: 11 }, (_, i) => ok(i, 6)))
      expect(limits[8]).toBe(10)
      expect(limits[10]).toBe(11)
      expect(LimitAlgorithm.replay(aimd, [ok(0, 4), ok(1, 1)])).toEqual([10, 10])
    })

    it("shrinks by backoffRatio on a drop, once for a burst of drops that started before it", () => {
      const aimd = LimitAlgorithm.aimd({ initial: 40, backoffRatio: 0.5 })
      // Three attempts started at t=0..2 are all dropped: one decrease. A drop started later decreases again.
      expect(LimitAlgorithm.replay(aimd, [drop(0, 40), drop(1, 40), drop(2, 40), drop(50, 20)])).toEqual([20, 20, 20, 10])
    })

    it("counts a success slower than timeoutMs as a drop", () => {
      const aimd = LimitAlgorithm.aimd({ initial: 10, timeoutMs: 100 })
      expect(LimitAlgorithm.replay(aimd, [ok(0, 10, 500)])).toEqual([9])
    })

    it("validates its options", () => {
      expect(() => LimitAlgorithm.aimd({ min: 0 })).toThrow(/min must be an integer ≥ 1, got 0/)
      expect(() => LimitAlgorithm.aimd({ min: 5, max: 4 })).toThrow(/max must be an integer ≥ min \(5\), got 4/)
      expect(() => LimitAlgorithm.aimd({ initial: 500 })).toThrow(/initial must be an integer in \[1, 200\], got 500/)
      expect(() => LimitAlgorithm.aimd({ backoffRatio: 1 })).toThrow(/backoffRatio must be in \(0, 1\), got 1/)
      expect(() => LimitAlgorithm.aimd({ increase: 0 })).toThrow(/increase must be > 0/)
    })
  })

  describe("gradient", () => {
    it("grows while latency holds steady under load", () => {
      const gradient = LimitAlgorithm.gradient({ initial: 20, max: 100 })
      const limits = LimitAlgorithm.replay(gradient, Array.from({ length: 50 }, (_, i) => ok(i, 100, 40)))
      expect(limits[limits.length - 1]).toBeGreaterThan(40)
    })

    it("shrinks when latency rises well above its long-term average", () => {
      const gradient = LimitAlgorithm.gradient({ initial: 50, max: 100 })
      const steady = Array.from({ length: 20 }, (_, i) => ok(i, 50, 40))
      const slow = Array.from({ length: 20 }, (_, i) => ok(100 + i, 50, 200))
      const limits = LimitAlgorithm.replay(gradient, [...steady, ...slow])
      expect(limits[limits.length - 1]).toBeLessThan(limits[19]! / 2)
    })

    it("reads the provider's own time where it is given: a client slowed by its own load is not a provider queueing", () => {
      const steady = Array.from({ length: 20 }, (_, i) => ok(i, 50, 40))
      // The client sees 200 ms; the provider says it spent 40 (openai-processing-ms).
      const slowClient = Array.from({ length: 20 }, (_, i) => ({ ...ok(100 + i, 50, 200), providerMs: 40 }))
      const limits = LimitAlgorithm.replay(LimitAlgorithm.gradient({ initial: 50, max: 100 }), [...steady, ...slowClient])
      expect(limits.at(-1)!).toBeGreaterThanOrEqual(limits[19]!)
      // The provider's own time rising is queueing, whatever the client saw.
      const queueing = Array.from({ length: 20 }, (_, i) => ({ ...ok(100 + i, 50, 200), providerMs: 200 }))
      const shrunk = LimitAlgorithm.replay(LimitAlgorithm.gradient({ initial: 50, max: 100 }), [...steady, ...queueing])
      expect(shrunk.at(-1)!).toBeLessThan(shrunk[19]! / 2)
    })

    it("does not move when the batch is app-limited", () => {
      const gradient = LimitAlgorithm.gradient({ initial: 40 })
      expect(new Set(LimitAlgorithm.replay(gradient, Array.from({ length: 30 }, (_, i) => ok(i, 3, 10 + i))))).toEqual(
        new Set([40])
      )
    })

    it("validates its options", () => {
      expect(() => LimitAlgorithm.gradient({ smoothing: 0 })).toThrow(/smoothing must be in \(0, 1\], got 0/)
      expect(() => LimitAlgorithm.gradient({ rttTolerance: 0.5 })).toThrow(/rttTolerance must be ≥ 1, got 0.5/)
      expect(() => LimitAlgorithm.gradient({ longWindow: 0 })).toThrow(/longWindow must be an integer ≥ 1, got 0/)
    })
  })

  it("fixed never moves and validates its limit", () => {
    const fixed = LimitAlgorithm.fixed(7)
    expect(LimitAlgorithm.replay(fixed, [drop(0, 7), ok(1, 7)])).toEqual([7, 7])
    expect(() => LimitAlgorithm.fixed(0)).toThrow(/fixed/)
  })
})
