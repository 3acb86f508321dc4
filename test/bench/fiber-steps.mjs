// A preload (`node --import`) for the jobs bench's `--count`: counts the steps of Effect's fiber runtime and
// the garbage collector's scavenges in its process. Unlike CPU time, which this machine's neighbours move by
// ±20 %, these repeat within a few percent, so they can tell two builds apart where CPU cannot.
// It wraps the step methods of effect 3.22.4's internal `FiberRuntime` (the version package.json pins);
// counting slows the process, so CPU figures taken with it are not comparable with figures taken without.
// Active when EFFECT_BATCH_BENCH_STEPS names a file: the counts go there as JSON every 500 ms, on SIGUSR1 and
// at exit; SIGUSR2 sets them to zero. In-process, `globalThis.effectBatchBenchSteps` has `reset` and `counts`.
import { writeFileSync } from "node:fs"
import { constants, PerformanceObserver } from "node:perf_hooks"

const out = process.env.EFFECT_BATCH_BENCH_STEPS
if (out !== undefined && out !== "") {
  const { FiberRuntime } = await import(new URL("../../node_modules/effect/dist/esm/internal/fiberRuntime.js", import.meta.url).href)
  // The runtime's loop calls the method named after each primitive's op code.
  const ops = ["Sync", "Success", "Failure", "OnSuccess", "OnFailure", "OnSuccessAndFailure", "Async", "Yield", "WithRuntime",
    "UpdateRuntimeFlags", "While", "Iterator", "Commit", "Left", "Right", "Some", "None", "Tag"]
  const zero = () => ({ steps: 0, scavenges: 0 })
  let counts = zero()
  for (const op of ops) {
    const step = FiberRuntime.prototype[op]
    if (typeof step !== "function") throw new Error(`fiber-steps: FiberRuntime has no ${op} step (not effect 3.22?)`)
    FiberRuntime.prototype[op] = function (primitive) {
      counts.steps++
      return step.call(this, primitive)
    }
  }
  // Counted, not timed: their time is as noisy as the CPU's.
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) counts.scavenges++
  }).observe({ entryTypes: ["gc"] })
  const write = () => writeFileSync(out, JSON.stringify(counts))
  globalThis.effectBatchBenchSteps = {
    reset: () => {
      counts = zero()
    },
    counts: () => ({ ...counts })
  }
  setInterval(write, 500).unref()
  process.on("SIGUSR1", write)
  process.on("SIGUSR2", globalThis.effectBatchBenchSteps.reset)
  process.on("exit", write)
}
