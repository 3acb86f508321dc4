// A preload (`node --import`) for the jobs bench's `--profile`: V8's CPU profile of the measured window only (the
// jobs' run, not the process's start or the bench's reads of the results afterwards), which `--cpu-prof` cannot
// give. Summarize one, or the difference of two, with `profile-summary.mjs`.
// Active when EFFECT_BATCH_BENCH_PROFILE names the file to write: SIGUSR2 starts the profiler and SIGUSR1 stops
// it and writes the profile; in-process, `globalThis.effectBatchBenchProfile` has `start` and `stop`. The inspector
// session is the process's own, on its main thread, whose calls (and their callbacks) run synchronously: the
// profile is written before `stop` returns, and a process exiting right after loses nothing.
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"

const out = process.env.EFFECT_BATCH_BENCH_PROFILE
if (out !== undefined && out !== "") {
  const session = new Session()
  session.connect()
  session.post("Profiler.enable")
  // 250 µs, not the default 1 ms: a fiber step is about a microsecond, and a job's costs are a few ms each.
  session.post("Profiler.setSamplingInterval", { interval: 250 })
  let running = false
  const start = () => {
    if (running) return
    running = true
    session.post("Profiler.start")
  }
  const stop = () => {
    if (!running) return
    running = false
    session.post("Profiler.stop", (error, result) => {
      if (error) throw error
      writeFileSync(out, JSON.stringify(result.profile))
    })
  }
  globalThis.effectBatchBenchProfile = { start, stop }
  process.on("SIGUSR2", start)
  process.on("SIGUSR1", stop)
}
