import { describe, expect, it } from "vitest"
import * as RunMonitor from "../../src/cli/RunMonitor.js"
import * as TaskError from "../../src/TaskError.js"
import * as TaskResult from "../../src/TaskResult.js"

describe("RunMonitor", () => {
  it("rebuilds the report from events, results, reservations and costs", () => {
    let now = 1_000
    const monitor = RunMonitor.make({ now: () => now, initialLimit: 8 })
    // item 0: estimate, attempt, retry, second attempt, success
    monitor.estimated(0, { tokens: 100, usd: 0.01 })
    monitor.event({ _tag: "AttemptStarted", index: 0, attempt: 1 })
    monitor.event({ _tag: "Retrying", index: 0, attempt: 1, errorClass: "Transient", delayMs: 500 })
    expect(monitor.counters().retrying).toBe(1)
    now = 1_500
    monitor.event({ _tag: "LimitChanged", limit: 12 })
    monitor.event({ _tag: "GateClosed", index: 0, durationMs: 1000 })
    monitor.waited({ requests: 1, tokens: 100, waitedMillis: 40, gateWaitedMillis: 300 })
    monitor.event({ _tag: "AttemptStarted", index: 0, attempt: 2 })
    expect(monitor.counters().retrying).toBe(0)
    monitor.settled({ tokens: 80, usd: 0.008 })
    monitor.event({ _tag: "ItemSucceeded", index: 0, attempts: 2, durationMs: 700, source: "call" })
    monitor.result(TaskResult.succeeded(0, "ok", 2, 700))
    // item 1: a cache hit; item 2: a rejected line; item 3: skipped by the budget
    monitor.result(TaskResult.succeeded(1, "ok", 0, 1, "cache"))
    monitor.result(TaskResult.failed(2, new TaskError.Permanent({ message: "bad line" }), "Permanent", 0, 0))
    monitor.result(TaskResult.skipped(3, "budget"))
    monitor.setTotal(4)
    now = 3_000

    expect(monitor.counters()).toEqual({
      done: 4,
      total: 4,
      succeeded: 2,
      failed: 1,
      skipped: 1,
      retrying: 0,
      limit: 12,
      cost: 0.008,
      elapsedMs: 2_000
    })
    const report = monitor.report(undefined)
    expect(report).toMatchObject({
      total: 4,
      succeeded: 2,
      failed: 1,
      skipped: 1,
      sources: { call: 1, cache: 1 },
      failures: { Permanent: 1 },
      skippedBy: { budget: 1 },
      attempts: 2,
      retries: 1,
      retriesBy: { Transient: 1 },
      wallMs: 2_000,
      rateLimitWaitMs: 40,
      gateWaitMs: 300,
      gateClosures: 1,
      concurrency: [[0, 8], [500, 12]],
      tokens: { estimated: 200, actual: 80 },
      cost: { estimated: 0.02, actual: 0.008 },
      budgetExceeded: undefined
    })
    // Latency counts only the item that made calls.
    expect(report.latencyMs.max).toBe(700)
    expect(report.latencyMs.p50).toBe(700)
  })
})
