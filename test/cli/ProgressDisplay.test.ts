import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as ProgressDisplay from "../../src/cli/ProgressDisplay.js"
import * as LiveCounters from "../../src/cli/LiveCounters.js"
import * as TaskResult from "../../src/TaskResult.js"

const state = (overrides: Partial<ProgressDisplay.State> = {}): ProgressDisplay.State => ({
  done: 250,
  total: 1000,
  succeeded: 245,
  failed: 3,
  skipped: 2,
  retrying: 4,
  limit: 24,
  cost: 0.0123,
  elapsedMs: 10_000,
  rate: 25,
  ...overrides
})

describe("ProgressDisplay.render", () => {
  it("draws a bar with done/total, failures, retries, rate, ETA, limit and cost", () => {
    expect(ProgressDisplay.render(state(), { style: "bar" })).toBe(
      "[#####---------------] 250/1000 25%  failed 3  skipped 2  retrying 4  25.0/s  ETA 30s  limit 24  $0.0123"
    )
  })

  it("writes a plain log line", () => {
    expect(ProgressDisplay.render(state({ skipped: 0 }), { style: "plain" })).toBe(
      "progress 250/1000 25%, failed 3, retrying 4, 25.0/s, ETA 30s, limit 24, $0.0123"
    )
  })

  it("counts without a total, and shows no ETA or rate it cannot know", () => {
    expect(ProgressDisplay.render(state({ total: undefined, rate: undefined, skipped: 0 }), { style: "bar" })).toBe(
      "250 done  failed 3  retrying 4  -/s  ETA -  limit 24  $0.0123"
    )
    expect(ProgressDisplay.render(state({ rate: 0 }), { style: "plain" })).toContain("ETA -")
  })

  it("says how long it took once everything is done", () => {
    const line = ProgressDisplay.render(state({ done: 1000, elapsedMs: 83_000 }), { style: "bar" })
    expect(line).toContain("[####################] 1000/1000 100%")
    expect(line).toContain("done in 1m23s")
    expect(line).not.toContain("ETA")
  })

  it("is cut to the terminal width", () => {
    const line = ProgressDisplay.render(state(), { style: "bar", width: 40 })
    expect(line.length).toBe(40)
    expect(line.endsWith("…")).toBe(true)
    expect(ProgressDisplay.render(state(), { style: "bar", width: 500 })).not.toContain("…")
  })

  it("formats durations, costs and ETAs", () => {
    expect([0, 59_400, 65_000, 3_725_000].map(ProgressDisplay.formatDuration)).toEqual(["0s", "59s", "1m05s", "1h02m"])
    expect([0, 0.01234, 12.345].map(ProgressDisplay.formatCost)).toEqual(["$0.0000", "$0.0123", "$12.35"])
    expect(ProgressDisplay.etaMs(state({ done: 900, rate: 50 }))).toBe(2000)
    expect(ProgressDisplay.etaMs(state({ total: undefined }))).toBeUndefined()
  })
})

describe("ProgressDisplay.start", () => {
  const fakeOutput = (isTTY: boolean) => {
    const writes: Array<string> = []
    const output: ProgressDisplay.Output = { isTTY, columns: () => 200, write: (text) => void writes.push(text) }
    return { writes, output }
  }

  const countersAt = () =>
    Effect.map(Effect.clock, (clock) => LiveCounters.make({ now: () => clock.unsafeCurrentTimeMillis(), initialLimit: 8 }))

  it.scoped("on a terminal: redraws one line with \\r every 100 ms, notes above it, a newline at the end", () =>
    Effect.gen(function*() {
      const { output, writes } = fakeOutput(true)
      const live = yield* countersAt()
      live.setTotal(4)
      const display = yield* ProgressDisplay.start({ counters: live, mode: "auto", output })
      yield* TestClock.adjust("50 millis")
      expect(writes).toEqual([])
      live.result(TaskResult.succeeded(0, "a", 1, 5))
      yield* TestClock.adjust("50 millis")
      expect(writes.length).toBe(1)
      expect(writes[0]).toMatch(/^\r\[#####-+\] 1\/4 25% {2}failed 0 .*limit 8 {2}\$0\.0000\x1b\[K$/)
      yield* TestClock.adjust("1 second")
      expect(writes.length).toBe(11)
      yield* display.note("in.jsonl:3: invalid JSON")
      expect(writes[11]).toBe("\r\x1b[Kin.jsonl:3: invalid JSON\n")
      expect(writes[12]).toMatch(/^\r\[/)
      yield* display.stop
      expect(writes.at(-1)).toBe("\n")
      const count = writes.length
      yield* TestClock.adjust("1 second")
      expect(writes.length).toBe(count)
    }))

  it.scoped("elsewhere: a plain line every 5 s, with the rate over the last seconds", () =>
    Effect.gen(function*() {
      const { output, writes } = fakeOutput(false)
      const live = yield* countersAt()
      yield* ProgressDisplay.start({ counters: live, mode: "auto", output })
      for (let i = 0; i < 50; i++) live.result(TaskResult.failed(i, "boom", "Permanent", 1, 1))
      yield* TestClock.adjust("4999 millis")
      expect(writes).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(writes).toEqual(["progress 50 done, failed 50, retrying 0, 10.0/s, ETA -, limit 8, $0.0000\n"])
    }))

  it.scoped("none: writes nothing, notes included", () =>
    Effect.gen(function*() {
      const { output, writes } = fakeOutput(true)
      const display = yield* ProgressDisplay.start({ counters: yield* countersAt(), mode: "none", output })
      yield* display.note("hello")
      yield* TestClock.adjust("10 seconds")
      yield* display.stop
      expect(writes).toEqual([])
    }))
})
