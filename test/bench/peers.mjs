// `npm run bench:peers`: effect-batch against p-limit, p-queue, Bottleneck, LangChain.js and a naive
// Promise.all on the same simulated OpenAI-compatible provider (see README.md here). Each scenario gets
// a simulator process of its own (compiled dist/); each runner runs once, in a process of its own,
// after POST /reset; calls and statuses come from the simulator's /metrics, not from the runners.
// Options: --scenario rate-limited|unknown-capacity|flaky  --variant a  --runners effect-batch,Bottleneck
//          --runs 3 (runs of each runner; rows show the median)
// Exits 0 whatever it finds: benchmarks never fail CI.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { fileURLToPath } from "node:url"
import { CONCURRENCY, scenarios } from "./scenarios.mjs"
import { startSimulator } from "./start-simulator.mjs"

const file = (name) => fileURLToPath(new URL(name, import.meta.url))
const arg = (name) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}
const allRunners = ["effect-batch", "effect-batch adaptive", "p-limit+p-retry", "p-queue+p-retry", "Bottleneck", "LangChain.js", "Promise.all"]
const runners = arg("--runners")?.split(",") ?? allRunners
const onlyScenario = arg("--scenario")
const onlyVariant = arg("--variant")
const runs = Number(arg("--runs") ?? 3)
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be an integer ≥ 1, got ${arg("--runs")}`)
const OURS = "effect-batch"
const ADAPTIVE = "effect-batch adaptive"

/** One runner in its own process; killed after `timeoutMs`. */
const runOne = (spec, runner, url, timeoutMs) =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [file("peer-runner.mjs"), spec.scenario, spec.variant, runner, url], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    let killed = false
    child.stdout.on("data", (chunk) => (out += chunk))
    child.stderr.on("data", (chunk) => (err += chunk))
    // SIGTERM first, so that the runner prints the calls it counted so far; SIGKILL if it does not exit.
    const timer = setTimeout(() => {
      killed = true
      child.kill("SIGTERM")
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"), 2000).unref()
    }, timeoutMs)
    child.on("exit", (code) => {
      clearTimeout(timer)
      try {
        const last = JSON.parse(out.trim().split("\n").pop())
        resolve({ runner, ...last, outcome: killed ? `killed after ${(timeoutMs / 1000).toFixed(0)} s` : "done" })
      } catch {
        if (killed) return resolve({ runner, outcome: `killed after ${(timeoutMs / 1000).toFixed(0)} s` })
        const why = err.split("\n").find((line) => /Error|error/.test(line)) ?? `exit code ${code}`
        resolve({ runner, outcome: `crashed: ${why.trim().slice(0, 100)}` })
      }
    })
  })

const getJson = async (url, init) => {
  const response = await fetch(url, init)
  return response.status === 204 ? undefined : response.json()
}

const table = (header, rows) => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  return [header, ...rows].map((cells) =>
    cells.map((c, i) => (i === 0 || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join("  ")
  ).join("\n")
}

const verdicts = []
const verdict = (met, text) => {
  verdicts.push([met, text])
  console.log(`${met ? "PASS" : "MISS"}  ${text}`)
}

/** `count` processes spinning on a core each, for scenarios with the client's machine busy. */
const startBusy = (count) => {
  const children = Array.from({ length: count }, () => spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }))
  return () =>
    Promise.all(children.map(async (child) => {
      child.kill("SIGKILL")
      if (child.exitCode === null && child.signalCode === null) await once(child, "exit")
    }))
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)]
}

/** One run of `runner` on a reset simulator, with the simulator's counts. */
const measure = async (spec, simulator, runner) => {
  const items = spec.prompts().length
  await getJson(`${simulator.url}/reset`, { method: "POST" })
  const result = await runOne(spec, runner, simulator.url, 3 * spec.boundMs + 30_000)
  // A killed runner's requests in flight are answered (or counted as 499) shortly after.
  if (result.outcome !== "done") await new Promise((resolve) => setTimeout(resolve, 500))
  const metrics = await getJson(`${simulator.url}/metrics`)
  const status = (code) => metrics.byStatus[String(code)] ?? 0
  const other5xx = Object.entries(metrics.byStatus)
    .filter(([code]) => Number(code) >= 500 && code !== "503")
    .reduce((sum, [, n]) => sum + n, 0)
  // Refused for limits or capacity: every 429, and the 503s of a capacity-limited provider
  // (in the flaky scenario, 503s are drawn transient failures, not refusals).
  const refused = status(429) + (spec.capacityLimited ? status(503) : 0)
  return {
    ...result,
    makespanMs: result.outcome === "done" ? result.makespanMs : Infinity,
    calls: metrics.received,
    s429: status(429),
    s503: status(503),
    other5xx,
    wastedPct: (100 * refused) / items,
    peakInFlight: metrics.peakInFlight
  }
}

const started = performance.now()
for (const spec of scenarios) {
  if (onlyScenario !== undefined && spec.scenario !== onlyScenario) continue
  if (onlyVariant !== undefined && spec.variant !== onlyVariant) continue
  const simulator = await startSimulator(spec.simulator)
  const stopBusy = spec.busy > 0 ? startBusy(Number(arg("--busy") ?? spec.busy)) : undefined
  // Runs interleaved (run 1 of every runner, then run 2, …), so that a slow spell of the machine is shared.
  const runsOf = new Map(runners.map((runner) => [runner, []]))
  for (let k = 1; k <= runs; k++) {
    for (const runner of runners) {
      const row = await measure(spec, simulator, runner)
      runsOf.get(runner).push(row)
      const shown = row.outcome === "done" ? `${Math.round(row.makespanMs)} ms, ${row.failed} failed` : row.outcome
      process.stderr.write(`  ${spec.scenario} ${spec.variant} ${runner} run ${k}/${runs}: ${shown}\n`)
    }
  }
  await stopBusy?.()
  await simulator.stop()

  // A runner's row is its median run by makespan (a killed run counts as the slowest); `failed` and
  // `wasted` also show the worst run, so a loss in one run of three is not hidden by the median.
  const rows = runners.map((runner) => {
    const all = runsOf.get(runner)
    const mid = median(all.map((row) => row.makespanMs))
    const row = all.find((r) => r.makespanMs === mid)
    const ratios = all.map((r) => r.makespanMs / spec.boundMs)
    return {
      ...row,
      ratio: mid / spec.boundMs,
      ratioRange: `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`,
      worstFailed: Math.max(...all.map((r) => (r.outcome === "done" ? r.failed : Infinity))),
      worstValidFailed: Math.max(...all.map((r) => (r.outcome === "done" ? r.validFailed : Infinity))),
      worstWastedPct: Math.max(...all.map((r) => r.wastedPct)),
      worst429: Math.max(...all.map((r) => r.s429)),
      allDone: all.every((r) => r.outcome === "done"),
      invalidCallsMax: all.some((r) => r.invalidCalls === undefined)
        ? undefined
        : all[0].invalidCalls.map((_, i) => Math.max(...all.map((r) => r.invalidCalls[i])))
    }
  })

  const flaky = spec.scenario === "flaky"
  console.log(`\n${spec.title}`)
  console.log(`lower bound ${(spec.boundMs / 1000).toFixed(2)} s = ${spec.boundText}`)
  if (spec.note !== undefined) console.log(`note: ${spec.note}`)
  const header = ["runner", "makespan", "× bound", `range of ${runs}`, "calls", "429", "503", "other 5xx", "wasted (worst)", "ok",
    "failed (worst)", "peak in flight"]
  if (flaky) header.push("calls/INVALID")
  header.push("")
  console.log(table(header, rows.map((row) => {
    const done = row.outcome === "done"
    const cells = [
      row.runner,
      done ? `${(row.makespanMs / 1000).toFixed(2)} s` : "-",
      done ? row.ratio.toFixed(2) : "-",
      row.ratioRange,
      row.calls,
      row.s429,
      row.s503,
      row.other5xx,
      `${row.wastedPct.toFixed(1)} % (${row.worstWastedPct.toFixed(1)} %)`,
      done ? row.succeeded : "-",
      done ? `${row.failed} (${row.worstFailed})` : "-",
      row.peakInFlight
    ]
    if (flaky) {
      const calls = row.invalidCallsMax
      cells.push(calls === undefined ? "-" : `${Math.min(...calls)}–${Math.max(...calls)}`)
    }
    const limit = row.limit === undefined ? "" : `limit final ${row.limit.final}, average ${row.limit.average.toFixed(1)}; `
    const delay = row.loopDelayMs === undefined ? "" : `loop delay mean ${row.loopDelayMs.mean.toFixed(1)} ms, p99 ${row.loopDelayMs.p99.toFixed(0)} ms`
    cells.push(done ? limit + delay : row.outcome)
    return cells
  })))

  const label = `${spec.scenario}${spec.variant === "-" ? "" : ` (${spec.variant})`}`
  const fixed = rows.find((row) => row.runner === OURS)
  const adaptive = rows.find((row) => row.runner === ADAPTIVE)
  const ours = spec.scenario === "unknown-capacity" || flaky ? adaptive : fixed
  if (fixed !== undefined && adaptive !== undefined) {
    // Within 1 %: identical runs differ by more than that.
    verdict(adaptive.ratio <= fixed.ratio * 1.01, `${label}: ${ADAPTIVE} is not slower than ${OURS} at a fixed ${CONCURRENCY} ` +
      `(${adaptive.ratio.toFixed(3)}× against ${fixed.ratio.toFixed(3)}×, medians; 1 % allowed for noise)`)
  }
  if (ours === undefined) continue
  const name = ours.runner
  const ratio = ours.ratio
  if (spec.scenario === "rate-limited" && spec.toldRpm !== undefined) {
    const [most, wasted] = spec.simulator.bucketMs >= 1000 ? [1.03, 0] : [1.05, 1]
    verdict(ratio <= most && ours.worstWastedPct <= wasted,
      `${label}: ${name} ≤ ${most}× the bound (${ratio.toFixed(2)}) and ≤ ${wasted} % of calls 429 (worst ${ours.worstWastedPct.toFixed(1)} %)`)
  } else if (spec.scenario === "rate-limited") {
    const wasted = spec.simulator.rateLimitHeaders === false ? 5 : 2
    verdict(ratio <= 1.1 && ours.worstWastedPct <= wasted && ours.worstFailed === 0,
      `${label}: ${name} ≤ 1.10× the bound (${ratio.toFixed(2)}), ≤ ${wasted} % wasted calls (worst ${ours.worstWastedPct.toFixed(1)} %) ` +
      `and no item lost (worst ${ours.worstFailed})`)
  } else if (spec.scenario === "unknown-capacity") {
    verdict(ratio <= 1.15 && ours.worstWastedPct <= 1,
      `${label}: ${name} ≤ 1.15× the bound (${ratio.toFixed(2)}) and ≤ 1 % wasted calls (worst ${ours.worstWastedPct.toFixed(1)} %)`)
  } else {
    for (const row of rows) {
      const tag = row.runner === OURS || row.runner === ADAPTIVE ? "" : " [peer, for information]"
      if (row.allDone) {
        verdict(row.worstValidFailed === 0, `${label}: ${row.runner}: every valid item succeeds (worst ${row.worstValidFailed} valid failed)${tag}`)
      } else verdict(false, `${label}: ${row.runner}: every valid item succeeds (not every run finished)${tag}`)
      if (row.invalidCallsMax === undefined) continue
      const extra = row.invalidCallsMax.filter((n) => n !== 1).length
      verdict(extra === 0, `${label}: ${row.runner}: each INVALID item costs exactly one call (${extra} cost more)${tag}`)
    }
    verdict(ratio <= 3.5, `${label}: ${name} ≤ 3.5× the bound (${ratio.toFixed(2)})`)
    const bounded = rows.filter((row) => row.runner !== "Promise.all" && row.runner !== name)
    const best = bounded.reduce((a, b) => (b.ratio < a.ratio ? b : a), ours)
    verdict(best === ours, `${label}: ${name} is faster than every runner held to ${CONCURRENCY} in flight (best of those: ${best.runner})`)
  }
}

console.log(`\nConcurrency ${CONCURRENCY} for every runner but ${ADAPTIVE} (LimitAlgorithm.recommended(), not told) and ` +
  `Promise.all; ${runs} run(s) each, median shown.`)
console.log("wasted = calls answered 429, or 503 by a capacity-limited provider, as a % of items.")
const ourMisses = verdicts.filter(([met, text]) => !met && !text.includes("[peer")).length
console.log(`${ourMisses === 0 ? "all goals for effect-batch met" : `${ourMisses} goal(s) for effect-batch missed`}, ` +
  `in ${((performance.now() - started) / 1000).toFixed(0)} s`)
