// A preload (`node --import`) for the jobs bench's `--sites`: the fiber steps of the measured window counted by
// code site, that is by the function each step runs (a `flatMap`'s continuation, a `sync`'s thunk, an `async`'s
// register…), named by its first characters of source. Where `--count` says how many steps, this says which: the
// difference of two runs (say run L's and run J's) by site is `step-sites.mjs`'s.
// It hooks the steps of effect 3.22.4's internal `FiberRuntime` as fiber-steps.mjs does (fiber-step-hook.mjs), and a
// site is a lookup per step: the process runs several times slower, and its CPU figures mean nothing.
// Active when EFFECT_BATCH_BENCH_SITES names the file to write: SIGUSR2 starts counting (from zero) and SIGUSR1
// stops it and writes the counts; in-process, `globalThis.effectBatchBenchSites` has `start` and `stop`.
import { writeFileSync } from "node:fs"
import { onFiberStep } from "./fiber-step-hook.mjs"

const out = process.env.EFFECT_BATCH_BENCH_SITES
if (out !== undefined && out !== "") {
  /** The primitive's field holding the function the step runs, by op code; the others count under the op's name. */
  const functionOf = {
    Sync: "effect_instruction_i0",
    Async: "effect_instruction_i0",
    WithRuntime: "effect_instruction_i0",
    OnSuccess: "effect_instruction_i1",
    OnFailure: "effect_instruction_i1",
    OnSuccessAndFailure: "effect_instruction_i1"
  }
  const names = new WeakMap()
  const nameOf = (fn) => {
    let name = names.get(fn)
    if (name === undefined) {
      name = fn.toString().replace(/\s+/g, " ").slice(0, 120)
      names.set(fn, name)
    }
    return name
  }
  let counting = false
  let sites = new Map()
  const count = (key) => sites.set(key, (sites.get(key) ?? 0) + 1)
  await onFiberStep("fiber-sites", (op, primitive) => {
    if (!counting) return
    const field = functionOf[op]
    if (field !== undefined && typeof primitive[field] === "function") count(`${op} ${nameOf(primitive[field])}`)
    // A commit (an `Effect.suspend`, a class of Effect's own) is told apart by what it commits.
    else if (op === "Commit" && typeof primitive.commit === "function") count(`Commit ${nameOf(primitive.commit)}`)
    else if (op === "Tag") count(`Tag ${String(primitive.key)}`)
    else count(op)
  })
  const start = () => {
    sites = new Map()
    counting = true
  }
  const stop = () => {
    if (!counting) return
    counting = false
    const rows = Array.from(sites).sort((a, b) => b[1] - a[1])
    writeFileSync(out, JSON.stringify({ steps: rows.reduce((n, [, c]) => n + c, 0), sites: rows }))
  }
  globalThis.effectBatchBenchSites = { start, stop }
  process.on("SIGUSR2", start)
  process.on("SIGUSR1", stop)
}
