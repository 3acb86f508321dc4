// `npm run bench:peers`: effect-batch against p-limit, p-queue, Bottleneck, LangChain.js and a naive
// Promise.all on the same simulated OpenAI-compatible provider (see README.md here). Each scenario gets
// a simulator process of its own (compiled dist/); each runner runs once, in a process of its own,
// after POST /reset; calls and statuses come from the simulator's /metrics, not from the runners.
// Options: --scenario rate-limited|unknown-capacity|flaky   --runners effect-batch,Bottleneck
// Exits 0 whatever it finds: benchmarks never fail CI.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { CONCURRENCY, scenarios } from "./scenarios.mjs"

const file = (name) => fileURLToPath(new URL(name, import.meta.url))
const arg = (name) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}
const allRunners = ["effect-batch", "p-limit+p-retry", "p-queue+p-retry", "Bottleneck", "LangChain.js", "Promise.all"]
const runners = arg("--runners")?.split(",") ?? allRunners
const onlyScenario = arg("--scenario")
const OURS = "effect-batch"

const startSimulator = async (options) => {
  const child = spawn(process.execPath, [file("simulator-process.mjs"), JSON.stringify(options)], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const [url] = await once(createInterface({ input: child.stdout }), "line")
  return {
    url,
    stop: async () => {
      child.kill("SIGKILL")
      if (child.exitCode === null && child.signalCode === null) await once(child, "exit")
    }
  }
}

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

const started = performance.now()
for (const spec of scenarios) {
  if (onlyScenario !== undefined && spec.scenario !== onlyScenario) continue
  const items = spec.prompts().length
  const simulator = await startSimulator(spec.simulator)
  const rows = []
  for (const runner of runners) {
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
    rows.push({
      ...result,
      calls: metrics.received,
      s429: status(429),
      s503: status(503),
      other5xx,
      wastedPct: (100 * refused) / items,
      peakInFlight: metrics.peakInFlight
    })
    process.stderr.write(`  ${spec.scenario} ${spec.variant} ${runner}: ${result.outcome === "done" ? `${Math.round(result.makespanMs)} ms` : result.outcome}\n`)
  }
  await simulator.stop()

  const flaky = spec.scenario === "flaky"
  console.log(`\n${spec.title}`)
  console.log(`lower bound ${(spec.boundMs / 1000).toFixed(2)} s = ${spec.boundText}`)
  if (spec.note !== undefined) console.log(`note: ${spec.note}`)
  const header = ["runner", "makespan", "× bound", "calls", "429", "503", "other 5xx", "wasted", "ok", "failed", "peak in flight"]
  if (flaky) header.push("calls/INVALID")
  header.push("")
  console.log(table(header, rows.map((row) => {
    const done = row.outcome === "done"
    const cells = [
      row.runner,
      done ? `${(row.makespanMs / 1000).toFixed(2)} s` : "-",
      done ? (row.makespanMs / spec.boundMs).toFixed(2) : "-",
      row.calls,
      row.s429,
      row.s503,
      row.other5xx,
      `${row.wastedPct.toFixed(1)} %`,
      done ? row.succeeded : "-",
      done ? row.failed : "-",
      row.peakInFlight
    ]
    if (flaky) {
      const calls = row.invalidCalls
      cells.push(calls === undefined ? "-" : `${Math.min(...calls)}–${Math.max(...calls)}${done ? "" : " so far"}`)
    }
    const limit = row.limit === undefined ? "" : `limit final ${row.limit.final}, average ${row.limit.average.toFixed(1)}`
    cells.push(done ? limit : row.outcome)
    return cells
  })))

  const ours = rows.find((row) => row.runner === OURS)
  if (ours === undefined) continue
  const label = `${spec.scenario}${spec.variant === "-" ? "" : ` (${spec.variant})`}`
  const ratio = ours.outcome === "done" ? ours.makespanMs / spec.boundMs : Infinity
  if (spec.scenario === "rate-limited" && spec.toldRpm !== undefined) {
    verdict(ratio <= 1.05 && ours.s429 === 0, `${label}: ${OURS} ≤ 1.05× the bound (${ratio.toFixed(2)}) and zero 429s (${ours.s429})`)
  } else if (spec.scenario === "rate-limited") {
    verdict(ratio <= 1.1 && ours.wastedPct <= 2, `${label}: ${OURS} ≤ 1.10× the bound (${ratio.toFixed(2)}) and ≤ 2 % wasted calls (${ours.wastedPct.toFixed(1)} %)`)
  } else if (spec.scenario === "unknown-capacity") {
    verdict(ratio <= 1.15 && ours.wastedPct <= 1, `${label}: ${OURS} ≤ 1.15× the bound (${ratio.toFixed(2)}) and ≤ 1 % wasted calls (${ours.wastedPct.toFixed(1)} %)`)
  } else {
    for (const row of rows) {
      const tag = row.runner === OURS ? "" : " [peer, for information]"
      const done = row.outcome === "done"
      if (done) verdict(row.validFailed === 0, `${label}: ${row.runner}: every valid item succeeds (${row.validFailed} valid failed)${tag}`)
      else verdict(false, `${label}: ${row.runner}: every valid item succeeds (${row.outcome})${tag}`)
      if (row.invalidCalls === undefined) continue
      const extra = row.invalidCalls.filter((n) => n !== 1).length
      const calls = row.invalidCalls.reduce((a, b) => a + b, 0)
      verdict(extra === 0, `${label}: ${row.runner}: each INVALID item costs exactly one call ` +
        `(${calls} calls for ${row.invalidCalls.length}${done ? "" : ", counted until killed"})${tag}`)
    }
    const best = rows.filter((row) => row.outcome === "done").reduce((a, b) => (b.makespanMs < a.makespanMs ? b : a), ours)
    verdict(best === ours, `${label}: ${OURS} has the best makespan of all runners (best: ${best.runner})`)
  }
}

console.log(`\nConcurrency ${CONCURRENCY} for every runner (effect-batch in unknown-capacity: adaptive, gradient). One run each;`)
console.log("wasted = calls answered 429, or 503 by a capacity-limited provider, as a % of items.")
const ourMisses = verdicts.filter(([met, text]) => !met && !text.includes("[peer")).length
console.log(`${ourMisses === 0 ? "all goals for effect-batch met" : `${ourMisses} goal(s) for effect-batch missed`}, ` +
  `in ${((performance.now() - started) / 1000).toFixed(0)} s`)
