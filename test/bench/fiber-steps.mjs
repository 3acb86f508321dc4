// A preload (`node --import`) for the jobs bench's `--count`: counts the steps of Effect's fiber runtime and
// the garbage collector's scavenges in its process. Unlike CPU time, which this machine's neighbours move by
// ±20 %, these repeat within a few percent, so they can tell two builds apart where CPU cannot.
// It hooks the steps of effect 3.22.4's internal `FiberRuntime` (fiber-step-hook.mjs); counting slows the
// process, so CPU figures taken with it are not comparable with figures taken without.
// Active when EFFECT_BATCH_BENCH_STEPS names a file: the counts go there as JSON every 500 ms, on SIGUSR1 and
// at exit; SIGUSR2 sets them to zero. In-process, `globalThis.effectBatchBenchSteps` has `reset` and `counts`.
import { writeFileSync } from "node:fs"
import { constants, PerformanceObserver } from "node:perf_hooks"
import { onFiberStep } from "./fiber-step-hook.mjs"

const out = process.env.EFFECT_BATCH_BENCH_STEPS
if (out !== undefined && out !== "") {
  const zero = () => ({ steps: 0, scavenges: 0 })
  let counts = zero()
  await onFiberStep("fiber-steps", () => {
    counts.steps++
  })
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
