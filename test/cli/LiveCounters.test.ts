import { describe, expect, it } from "vitest"
import * as LiveCounters from "../../src/cli/LiveCounters.js"
import * as TaskError from "../../src/TaskError.js"
import * as TaskResult from "../../src/TaskResult.js"

describe("LiveCounters", () => {
  it("counts outcomes, retries in wait, the limit and the cost from events, results and settled costs", () => {
    let now = 1_000
    const live = LiveCounters.make({ now: () => now, initialLimit: 8 })
    expect(live.counters()).toMatchObject({ done: 0, total: undefined, limit: 8, retrying: 0, cost: 0, elapsedMs: 0 })
    // item 0: attempt, retry, second attempt, success
    live.event({ _tag: "AttemptStarted", index: 0, attempt: 1 })
    live.event({ _tag: "Retrying", index: 0, attempt: 1, errorClass: "Transient", delayMs: 500 })
    expect(live.counters().retrying).toBe(1)
    now = 1_500
    live.event({ _tag: "LimitChanged", limit: 12 })
    live.event({ _tag: "AttemptStarted", index: 0, attempt: 2 })
    expect(live.counters().retrying).toBe(0)
    live.settled({ tokens: 80, usd: 0.008 })
    live.event({ _tag: "ItemSucceeded", index: 0, attempts: 2, durationMs: 700, source: "call" })
    live.result(TaskResult.succeeded(0, "ok", 2, 700))
    // item 1: a cache hit; item 2: a rejected line; item 3: skipped by the budget; item 4 settles while waiting to retry
    live.result(TaskResult.succeeded(1, "ok", 0, 1, "cache"))
    live.result(TaskResult.failed(2, new TaskError.Permanent({ message: "bad line" }), "Permanent", 0, 0))
    live.result(TaskResult.skipped(3, "budget"))
    live.event({ _tag: "Retrying", index: 4, attempt: 1, errorClass: "Transient", delayMs: 500 })
    live.event({ _tag: "ItemSkipped", index: 4, reason: "interrupted" })
    live.result(TaskResult.skipped(4, "interrupted"))
    live.settled(undefined)
    live.setTotal(5)
    now = 3_000

    expect(live.counters()).toEqual({
      done: 5,
      total: 5,
      succeeded: 2,
      failed: 1,
      skipped: 2,
      retrying: 0,
      limit: 12,
      cost: 0.008,
      elapsedMs: 2_000
    })
  })
})
