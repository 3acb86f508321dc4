// What the job service's way of running items costs `Batch.run`, apart from the jobs' workflow and store. The
// jobs bench's 10 000 prompts, against its simulator (50 ms, 256 slots), through `Batch.run` in five shapes, each
// in a process of its own, the rounds taking turns (medians of each round's ratio to `plain`):
//   plain    the jobs bench's baseline: Batch.run(prompts, llm.task, { ...llm.options, concurrency: 128 })
//   options  one batch with what a job's chunk gives its items (JobRunner's runChunk): items as { input, index },
//            the profile's estimate and settle, BatchMetrics under labels, an onResult that builds an outcome, a
//            prioritized limiter of 128 (the profile's), a rate limiter, a budget and CurrentRun
//   chunks   the same items in 40 batches of 250, two at a time, on that limiter: the one job of the jobs bench's
//            run L, whose chunks of 250 run two at a time
//   jobs     the same items in 50 batches of 200 at once on that limiter: run B's 50 jobs
//   turns    the same 50 batches one after another: what the 50 batches cost apart from sharing the limiter at once
//            (the limit is not full between two batches, so the run is longer and the process less loaded)
//   node test/bench/batch-shapes.mjs [--rounds 5] [--shapes plain,options,chunks,jobs,turns] [--sleep MS]   (build first)
//   node test/bench/batch-shapes.mjs shape <name> <simulator url | sleep:MS>   (one shape, one run: a JSON line)
// --sleep MS: no simulator and no HTTP; each call is a sleep of MS ms (and the options have no estimate or settle,
// having no provider). The engine alone, with far less noise from run to run, for looking into what a shape costs it.
// CPU is the process's over `Batch.run` alone, every thread counted, as the jobs bench counts it. On Linux it is
// also split between the main thread and the others (V8's collector and compiler helpers), read from /proc.
// Prints figures and asserts none about speed; exits 1 only if an item did not succeed.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { fileURLToPath } from "node:url"
import { median, spread } from "./medians.mjs"
import { mainThreadCpuMsOf } from "./proc-cpu.mjs"
import { startSimulator } from "./start-simulator.mjs"

const ITEMS = 10_000
const CONCURRENCY = 128
const SIMULATOR = { seed: 7, latency: { baseMs: 50 }, capacity: 256 }
/** How many batches the items are split into on one shared limiter (0: `plain`'s own limit), and how many run at once. */
const shapes = {
  plain: { batches: 0, atOnce: 1 },
  options: { batches: 1, atOnce: 1 },
  chunks: { batches: 40, atOnce: 2 },
  jobs: { batches: 50, atOnce: 50 },
  turns: { batches: 50, atOnce: 1 }
}
const prompt = (i) => `Item ${i}: write one short sentence about the number ${i}.`

/** CPU ms this process's main thread has used so far, or undefined where there is no /proc. */
const mainThreadCpu = () => {
  try {
    return mainThreadCpuMsOf(process.pid)
  } catch {
    return undefined
  }
}

// --- one shape, one run, in a process of its own --------------------------------------------------

if (process.argv[2] === "shape") {
  const [name, url] = process.argv.slice(3)
  const { NodeHttpClient } = await import("@effect/platform-node")
  const { Effect } = await import("effect")
  const { Batch, BatchMetrics, Budget, ConcurrencyLimiter, Idempotency, LimitAlgorithm, RateLimiter } = await import(
    "../../dist/index.js"
  )
  const { OpenAiCompat } = await import("../../dist/llm/index.js")
  const sleepMs = url.startsWith("sleep:") ? Number(url.slice("sleep:".length)) : undefined
  const llm = sleepMs === undefined
    ? OpenAiCompat.chat({ baseUrl: `${url}/v1`, model: "sim-chat" })
    // What `onResult` reads of a completion, after a sleep in place of the call.
    : { task: (input) => Effect.as(Effect.sleep(sleepMs), { content: input, usage: { totalTokens: 0 } }), options: {} }
  const prompts = Array.from({ length: ITEMS }, (_, i) => prompt(i))
  const { batches, atOnce } = shapes[name]
  let run
  if (batches === 0) {
    run = Batch.run(prompts, llm.task, { ...llm.options, concurrency: CONCURRENCY })
  } else {
    const { estimate, settle } = llm.options
    const options = {
      ...(estimate === undefined ? {} : { estimate: (item) => estimate(item.input, item.index) }),
      ...(settle === undefined ? {} : { settle: (value, item) => settle(value, item.input, item.index) }),
      metrics: true,
      name: "job",
      // As JobRunner's outcomeOf: an object per result, kept until the next one (the writer's buffer).
      onResult: (result) => {
        globalThis.effectBatchBenchOutcome = result._tag === "Succeeded"
          ? { index: result.index, status: "succeeded", output: { content: result.value.content, usage: result.value.usage } }
          : { index: result.index, status: result._tag }
        return undefined
      }
    }
    const items = prompts.map((input, index) => ({ input, index }))
    const per = ITEMS / batches
    const limiter = await Effect.runPromise(ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(CONCURRENCY)))
    const rateLimiter = await Effect.runPromise(RateLimiter.make({}))
    run = Effect.forEach(
      Array.from({ length: batches }, (_, i) => items.slice(i * per, (i + 1) * per)),
      (part) =>
        Batch.run(part, (item) => llm.task(item.input, item.index), options).pipe(
          BatchMetrics.withLabels({ profile: "sim", model: "sim-chat" }),
          Effect.provideService(Budget.Budget, Budget.unsafeMake({})),
          Effect.provideService(Idempotency.CurrentRun, { runId: "job" })
        ),
      { concurrency: atOnce }
    ).pipe(
      Effect.map((runs) => ({ results: runs.flatMap((r) => r.results) })),
      Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter),
      Effect.provideService(RateLimiter.RateLimiter, rateLimiter)
    )
  }
  const mainBefore = mainThreadCpu()
  const cpu = process.cpuUsage()
  const start = performance.now()
  const { results } = await Effect.runPromise(run.pipe(Effect.provide(NodeHttpClient.layerUndici)))
  const wallMs = performance.now() - start
  const used = process.cpuUsage(cpu)
  const mainAfter = mainThreadCpu()
  console.log(JSON.stringify({
    wallMs,
    cpuMs: (used.user + used.system) / 1000,
    // The other threads' share is `cpuMs - mainMs`, as the jobs bench takes it.
    ...(mainBefore === undefined || mainAfter === undefined ? {} : { mainMs: mainAfter - mainBefore }),
    succeeded: results.filter((r) => r._tag === "Succeeded").length
  }))
  process.exit(0)
}

// --- the rounds --------------------------------------------------------------------------------------

const arg = (flag) => {
  const at = process.argv.indexOf(flag)
  return at < 0 ? undefined : process.argv[at + 1]
}
const rounds = Number(arg("--rounds") ?? 5)
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`batch-shapes: --rounds must be an integer ≥ 1, got ${arg("--rounds")}`)
  process.exit(2)
}
const chosen = arg("--shapes")?.split(",") ?? Object.keys(shapes)
const unknown = chosen.filter((name) => !(name in shapes))
if (unknown.length > 0 || !chosen.includes("plain")) {
  console.error(`batch-shapes: --shapes takes plain (always) and any of ${Object.keys(shapes).join(", ")}; got ${chosen.join(",")}`)
  process.exit(2)
}

const sleepMs = arg("--sleep")
if (sleepMs !== undefined && !(Number.isInteger(Number(sleepMs)) && Number(sleepMs) >= 0)) {
  console.error(`batch-shapes: --sleep takes the milliseconds a call sleeps, an integer ≥ 0; got ${sleepMs}`)
  process.exit(2)
}
const simulator = sleepMs === undefined ? await startSimulator(SIMULATOR) : undefined
const url = simulator?.url ?? `sleep:${sleepMs}`

const runShape = async (name) => {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "shape", name, url], { stdio: ["ignore", "pipe", "inherit"] })
  let out = ""
  child.stdout.on("data", (chunk) => (out += chunk))
  const [code] = await once(child, "exit")
  if (code !== 0) throw new Error(`shape ${name} exited with ${code}`)
  return JSON.parse(out.trim().split("\n").pop())
}

const began = performance.now()
const calls = sleepMs === undefined ? `simulator ${SIMULATOR.latency.baseMs} ms / ${SIMULATOR.capacity} slots` : `each call a sleep of ${sleepMs} ms`
console.log(`Batch.run of ${ITEMS} items in shapes, ${calls}, limit ${CONCURRENCY}; ${rounds} round(s)`)
const byShape = Object.fromEntries(chosen.map((name) => [name, []]))
let failures = 0
try {
  for (let round = 0; round < rounds; round++) {
    for (const name of chosen) {
      const row = await runShape(name)
      if (row.succeeded !== ITEMS) {
        failures++
        console.log(`ERROR  ${name}, round ${round + 1}: ${row.succeeded} of ${ITEMS} items succeeded`)
      }
      byShape[name].push(row)
    }
  }
} finally {
  await simulator?.stop()
}

const perItemUs = (ms) => (ms * 1000) / ITEMS
console.log("\nshape     batches  at once  CPU µs per item     × plain (of its round)  main thread µs  other threads µs  makespan ms")
for (const name of chosen) {
  const rows = byShape[name]
  const ratios = rows.map((row, round) => row.cpuMs / byShape.plain[round].cpuMs)
  const threads = rows.every((row) => row.mainMs !== undefined)
  console.log([
    name.padEnd(9),
    String(shapes[name].batches || 1).padStart(7),
    String(shapes[name].atOnce).padStart(9),
    `  ${spread(rows.map((row) => perItemUs(row.cpuMs)), 0).padEnd(18)}`,
    `  ${spread(ratios, 2).padEnd(22)}`,
    `  ${(threads ? median(rows.map((row) => perItemUs(row.mainMs))).toFixed(0) : "-").padStart(14)}`,
    `  ${(threads ? median(rows.map((row) => perItemUs(row.cpuMs - row.mainMs))).toFixed(0) : "-").padStart(16)}`,
    `  ${median(rows.map((row) => row.wallMs)).toFixed(0).padStart(11)}`
  ].join(""))
}
console.log(`\n${failures === 0 ? "no functional errors" : `${failures} run(s) with items that did not succeed`}, in ${((performance.now() - began) / 1000).toFixed(0)} s`)
process.exit(failures === 0 ? 0 : 1)
