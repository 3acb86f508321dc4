// The job service under load: 50 concurrent jobs of 200 items against the simulator (latency 50 ms,
// 256 slots, no failures, no rate limits), so that the service, not the provider, is what is measured.
// The simulator, the service (`node dist/bin.js serve`, SQLite in a temp dir, one profile at a fixed
// concurrency of 128) and Batch.run each run in a process of their own; this process is the client.
//   node test/bench/jobs.mjs              (everything, 1.5–3 minutes; writes .bench-out/jobs.json)
//   node test/bench/jobs.mjs --only B,S1  (those service runs only, and the baseline: quicker, to compare builds)
//   node test/bench/jobs.mjs --only B --repeat 3  (each run and the baseline 3 times, taking turns: medians of
//     the ratios to the baseline of the same round, which a noisy machine moves far less than the figures themselves)
//   node test/bench/jobs.mjs --only L --count  (each process counts its fiber steps and scavenges, which repeat
//     where CPU does not: see fiber-steps.mjs)
//   node test/bench/jobs.mjs --only B,L --profile /tmp/prof  (each process writes a CPU profile of the measured
//     window: see cpu-profile.mjs and profile-summary.mjs)
//   node test/bench/jobs.mjs --only B,J --sql /tmp/sql  (each service process on SQLite writes a table of the
//     statements and transactions it ran in the window: see sql-statements.mjs)
//   node test/bench/jobs.mjs --only L,J --sites /tmp/sites  (each process counts the window's fiber steps by code
//     site: see fiber-sites.mjs and step-sites.mjs)
//   node test/bench/jobs.mjs --only B,L --untraced-baseline  (the baseline's Batch.run with Effect's tracer off, as
//     the service runs without --otlp: like with like; by default it runs as a program would, tracer on)
//   node test/bench/jobs.mjs batch-run <simulator url> [untraced]   (the Batch.run baseline alone, a JSON line)
// Three service runs, each on a fresh process and database: (A) with 100 SSE subscribers (2 per job),
// for submission latency (the burst of 50, and 20 small submissions one at a time while they run),
// makespan and SSE delivery; (B) without subscribers, for the engine's CPU
// per item, compared with the same 10 000 items through Batch.run; (L) the same items as one job, which
// tells what an item costs apart from what each job costs (its workflow, start, chunks, finish). With DATABASE_URL (and REDIS_URL)
// set, two more, the service split over processes on a fresh PostgreSQL database: an API
// (`--role api`) and one (S1) or two (S2) runners (`--role runner`, the profile's 128 shared through
// Redis), with the subscribers of run A; CPU is summed over the API and the runners.
// Prints figures and asserts none about speed; exits 1 only if something is functionally wrong (a job
// not finished, results missing, an SSE gap, calls lost or repeated).
import { execFileSync, spawn } from "node:child_process"
import { once } from "node:events"
import { createServer } from "node:net"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { getPriority, setPriority, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { spread } from "./medians.mjs"
import { cpuMsOf, mainThreadCpuMsOf } from "./proc-cpu.mjs"

const JOBS = 50
/** Submissions made one at a time while the 50 jobs run (10 items each), for the latency of one submission under load. */
const PROBES = 20
const PROBE_ITEMS = 10
const PROBE_EVERY_MS = 150
const ITEMS_PER_JOB = 200
const ITEMS = JOBS * ITEMS_PER_JOB
/** Run J's jobs: the same items in more, smaller jobs (and no more than one `GET /jobs` page of them). */
const JOBS_J = 200
const CONCURRENCY = 128
const SUBSCRIBERS_PER_JOB = 2
const LATENCY_MS = 50
const SIMULATOR = { seed: 7, latency: { baseMs: LATENCY_MS }, capacity: 256 }
const API_KEY = "bench-key-0123456789abcdef"
const { DATABASE_URL, REDIS_URL } = process.env
const RUN_TIMEOUT_MS = 90_000
/** The split runs' runners run at this niceness over the bench's, as `npm run serve:cluster` starts them. */
const RUNNER_NICENESS = 10
const POLL_EVERY_MS = 200

const file = (name) => fileURLToPath(new URL(name, import.meta.url))
const prompt = (i) => `Item ${i}: write one short sentence about the number ${i}.`
const prompts = Array.from({ length: ITEMS }, (_, i) => prompt(i))

// --- the Batch.run baseline, in a process of its own ----------------------------------------------

if (process.argv[2] === "batch-run") {
  const { NodeHttpClient } = await import("@effect/platform-node")
  const { Effect } = await import("effect")
  const { Batch } = await import("../../dist/index.js")
  const { OpenAiCompat } = await import("../../dist/llm/index.js")
  const url = process.argv[3]
  const llm = OpenAiCompat.chat({ baseUrl: `${url}/v1`, model: "sim-chat" })
  const traced = Batch.run(prompts, llm.task, { ...llm.options, concurrency: CONCURRENCY }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  const run = process.argv[4] === "untraced" ? Effect.withTracerEnabled(traced, false) : traced
  globalThis.effectBatchBenchSteps?.reset()
  globalThis.effectBatchBenchProfile?.start()
  globalThis.effectBatchBenchSites?.start()
  const mainBefore = mainThreadCpuMsOf(process.pid)
  const cpu = process.cpuUsage()
  const start = performance.now()
  const { results } = await Effect.runPromise(run)
  const wallMs = performance.now() - start
  const used = process.cpuUsage(cpu)
  const mainThreadMs = mainThreadCpuMsOf(process.pid) - mainBefore
  globalThis.effectBatchBenchProfile?.stop()
  globalThis.effectBatchBenchSites?.stop()
  console.log(JSON.stringify({
    wallMs,
    cpuMs: (used.user + used.system) / 1000,
    mainThreadMs,
    succeeded: results.filter((r) => r._tag === "Succeeded").length,
    counts: globalThis.effectBatchBenchSteps?.counts(),
    peakRssMb: process.resourceUsage().maxRSS / 1024
  }))
  process.exit(0)
}

/** The service runs asked for (`--only A,B,L,S1,S2`); every one by default. */
const only = (() => {
  const at = process.argv.indexOf("--only")
  if (at < 0) return undefined
  const labels = (process.argv[at + 1] ?? "").split(",").filter((label) => label !== "")
  const unknown = labels.filter((label) => !["A", "B", "L", "J", "S1", "S2"].includes(label))
  if (labels.length === 0 || unknown.length > 0) {
    console.error(`--only takes a comma-separated list of A, B, L, J, S1 and S2, got ${JSON.stringify(process.argv[at + 1] ?? "")}`)
    process.exit(2)
  }
  return new Set(labels)
})()
const wanted = (label) => only === undefined || only.has(label)
/** Rounds of every run asked for and the baseline, in turn (`--repeat N`); 1 by default. */
const repeat = (() => {
  const at = process.argv.indexOf("--repeat")
  if (at < 0) return 1
  const n = Number(process.argv[at + 1])
  if (!Number.isInteger(n) || n < 1 || n > 20) {
    console.error(`--repeat takes a whole number of rounds from 1 to 20, got ${JSON.stringify(process.argv[at + 1] ?? "")}`)
    process.exit(2)
  }
  return n
})()

/**
 * `--count`: every process under test counts its fiber steps and scavenges (`fiber-steps.mjs`), figures that
 * repeat where CPU time does not; the counting slows the processes, so their CPU figures are not comparable.
 */
const counting = process.argv.includes("--count")
/** `--untraced-baseline`: the baseline's Batch.run makes no spans, as the service without `--otlp` makes none. */
const untracedBaseline = process.argv.includes("--untraced-baseline")
/** The directory after `flag` (made if missing), or undefined without the flag; `what` is what goes in it. */
const directoryOption = (flag, what) => {
  const at = process.argv.indexOf(flag)
  if (at < 0) return undefined
  const dir = process.argv[at + 1]
  if (dir === undefined || dir.startsWith("--")) {
    console.error(`${flag} takes the directory to write ${what} to`)
    process.exit(2)
  }
  mkdirSync(dir, { recursive: true })
  return dir
}
/**
 * `--profile DIR`: every process under test writes V8's CPU profile of the measured window to DIR
 * (`cpu-profile.mjs`), named after the run, the round and the process. Not with `--count`, which would be in it.
 */
if ((counting || process.argv.includes("--sites")) && process.argv.includes("--profile")) {
  console.error("--profile does not go with --count or --sites: the profiles would time the counting")
  process.exit(2)
}
const profileDir = directoryOption("--profile", "the CPU profiles")
/**
 * `--sql DIR`: every service process on SQLite writes a table of the statements it ran in the measured window,
 * counted and timed by text, and of its transactions (`sql-statements.mjs`).
 */
const sqlDir = directoryOption("--sql", "the statement tables")
/** `--sites DIR`: every process under test writes its fiber steps of the measured window by code site (`fiber-sites.mjs`). */
const sitesDir = directoryOption("--sites", "the step counts by site")

// --- child processes, always killed on the way out ------------------------------------------------

let stepFiles = 0
/** Files written by `--profile`, `--sql` and `--sites`, listed at the end. */
const written = []
/**
 * The node arguments and environment that make a child count its steps (`--count`), profile its CPU (`--profile`)
 * or count its statements (`--sql`, a service process only), and where they go (`name` names the files). Each
 * starts on SIGUSR2 and ends on SIGUSR1.
 */
const instrumentedBy = (name, { service = true } = {}) => {
  const execArgv = []
  const env = {}
  let stepsFile, profileFile, sqlFile, sitesFile
  if (counting) {
    stepsFile = join(dir, `steps-${++stepFiles}.json`)
    execArgv.push("--import", file("fiber-steps.mjs"))
    env.EFFECT_BATCH_BENCH_STEPS = stepsFile
  }
  if (profileDir !== undefined) {
    profileFile = join(profileDir, `${name}-${Date.now()}.cpuprofile`)
    written.push(profileFile)
    execArgv.push("--import", file("cpu-profile.mjs"))
    env.EFFECT_BATCH_BENCH_PROFILE = profileFile
  }
  if (sqlDir !== undefined && service) {
    sqlFile = join(sqlDir, `${name}-${Date.now()}.sql.txt`)
    written.push(sqlFile)
    execArgv.push("--import", file("sql-statements.mjs"))
    env.EFFECT_BATCH_BENCH_SQL = sqlFile
  }
  if (sitesDir !== undefined) {
    sitesFile = join(sitesDir, `${name}-${Date.now()}.sites.json`)
    written.push(sitesFile)
    execArgv.push("--import", file("fiber-sites.mjs"))
    env.EFFECT_BATCH_BENCH_SITES = sitesFile
  }
  return { execArgv, env, stepsFile, profileFile, sqlFile, sitesFile }
}
const instrumented = (child) =>
  child.stepsFile !== undefined || child.profileFile !== undefined || child.sqlFile !== undefined || child.sitesFile !== undefined
/** Ends the measured window of the instrumented children; a counted child's counts (it writes them on SIGUSR1). */
const countsOf = async (children) => {
  const ended = children.filter(instrumented)
  for (const child of ended) child.kill("SIGUSR1")
  const counted = children.filter((child) => child.stepsFile !== undefined)
  if (ended.length === 0) return undefined
  await sleep(300)
  if (counted.length === 0) return undefined
  const all = counted.map((child) => JSON.parse(readFileSync(child.stepsFile, "utf8")))
  return { steps: all.reduce((n, c) => n + c.steps, 0), scavenges: all.reduce((n, c) => n + c.scavenges, 0) }
}

const children = new Set()
const dir = mkdtempSync(join(tmpdir(), "effect-batch-jobs-bench-"))
/** PostgreSQL databases made for the split runs, dropped on the way out. */
const databases = []
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL")
  rmSync(dir, { recursive: true, force: true })
  for (const database of databases) {
    try {
      execFileSync("psql", [DATABASE_URL, "-q", "-c", `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`], { stdio: "ignore" })
    } catch {
      // Left behind: named after this process, dropped by the next run with the same pid at worst.
    }
  }
})
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130))

const track = (child) => {
  children.add(child)
  child.on("exit", () => children.delete(child))
  return child
}
const stop = async (child) => {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill("SIGKILL")
  await once(child, "exit")
}

/** Resolves with the first stdout line matching `pattern` (its match); rejects if the child exits first. */
const waitForLine = (child, pattern, what) =>
  new Promise((resolve, reject) => {
    let stderr = ""
    child.stderr?.on("data", (chunk) => (stderr += chunk))
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 30 s`)), 30_000)
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = pattern.exec(line)
      if (match !== null) {
        clearTimeout(timer)
        resolve(match)
      }
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`${what} exited (${code}) before it was ready: ${stderr.trim().split("\n").slice(-3).join(" | ")}`))
    })
  })

const peakRssMbOf = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024

// --- helpers --------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const percentile = (sorted, p) => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
const summary = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN }
}
const ms = (value) => Number.isFinite(value) ? `${Math.round(value)} ms` : "-"
const errors = []
const fail = (message) => {
  errors.push(message)
  console.log(`ERROR  ${message}`)
}

const getJson = async (url, init) => {
  const response = await fetch(url, init)
  if (!response.ok) throw new Error(`${init?.method ?? "GET"} ${url}: ${response.status} ${await response.text()}`)
  return response.status === 204 ? undefined : response.json()
}

// --- the simulator --------------------------------------------------------------------------------

const simulatorProcess = track(spawn(process.execPath, [file("simulator-process.mjs"), JSON.stringify(SIMULATOR)], {
  stdio: ["ignore", "pipe", "pipe"]
}))
const [simulatorUrl] = await waitForLine(simulatorProcess, /^http\S+$/, "the simulator")
const profilesFile = join(dir, "profiles.json")
writeFileSync(profilesFile, JSON.stringify({
  profiles: [{ name: "sim", baseUrl: `${simulatorUrl}/v1`, models: ["sim-chat"], concurrency: CONCURRENCY }]
}))

/** What the provider saw since the last reset; checks that every item was called exactly once. */
const providerCheck = async (label, probes = 0) => {
  const metrics = await getJson(`${simulatorUrl}/metrics`)
  const expected = ITEMS + probes * PROBE_ITEMS
  if (metrics.received !== expected) fail(`${label}: the provider received ${metrics.received} calls for ${expected} items`)
  return { calls: metrics.received, peakInFlight: metrics.peakInFlight, byStatus: metrics.byStatus }
}

// --- one service run ------------------------------------------------------------------------------

/** Follows one job's SSE stream to its end; records delivery latency and checks the ids. */
const subscribe = async (base, jobId, headers) => {
  const sub = { jobId, latencies: [], backlog: 0, events: 0, byType: {}, progressWhileRunning: 0, lastId: 0, finalState: undefined }
  const response = await fetch(`${base}/jobs/${jobId}/events`, { headers })
  const connectedAt = Date.now()
  if (!response.ok) throw new Error(`GET /jobs/${jobId}/events: ${response.status}`)
  const decoder = new TextDecoder()
  let buffer = ""
  for await (const bytes of response.body) {
    const receivedAt = Date.now()
    buffer += decoder.decode(bytes, { stream: true })
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const frame = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      let id
      let type
      let data
      for (const line of frame.split("\n")) {
        if (line.startsWith("id: ")) id = Number(line.slice(4))
        else if (line.startsWith("event: ")) type = line.slice(7)
        else if (line.startsWith("data: ")) data = JSON.parse(line.slice(6))
      }
      if (id === undefined) continue // the retry hint, keep-alives
      if (id !== sub.lastId + 1) fail(`SSE ${jobId}: event id ${id} after ${sub.lastId} (expected ${sub.lastId + 1})`)
      sub.lastId = id
      sub.events++
      sub.byType[type] = (sub.byType[type] ?? 0) + 1
      if (type === "progress" && data.pending > 0) sub.progressWhileRunning++
      // Events published before the connection was open came from the stored backlog: not a delivery latency.
      if (data.at < connectedAt) sub.backlog++
      else sub.latencies.push(receivedAt - data.at)
      if (type === "state" && !["queued", "running"].includes(data.state)) sub.finalState = data.state
    }
  }
  return sub
}

/** One `serve` process, ready once it prints `ready`; its warnings counted into `logged`. */
const serveProcess = async (args, ready, what, logged, name) => {
  const { execArgv, env, ...files } = instrumentedBy(name)
  const child = track(spawn(process.execPath, [...execArgv, file("../../dist/bin.js"), "serve", "--profiles", profilesFile, ...args], {
    env: { ...process.env, ...env, EFFECT_BATCH_API_KEYS: `bench=${API_KEY}` },
    stdio: ["ignore", "pipe", "pipe"]
  }))
  // Where its counts, profile, statements and sites go, for `countsOf` and `instrumented`.
  Object.assign(child, files)
  const started = waitForLine(child, ready, what)
  createInterface({ input: child.stderr }).on("line", (line) => {
    logged.lines.push(line)
    if (/WARN|ERROR|FATAL/.test(line)) logged.warnings++
  })
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (/level=(WARN|ERROR|FATAL)/.test(line)) {
      logged.warnings++
      logged.lines.push(line)
    }
  })
  return [child, await started]
}

/** A port free on loopback now: a fixed one could still be held by the runner of the round before. */
const freePort = async () => {
  const server = createServer().listen(0, "127.0.0.1")
  await once(server, "listening")
  const { port } = server.address()
  server.close()
  await once(server, "close")
  return port
}

/**
 * The service as `runners` says: 0, one process on SQLite; n, an API and n runners on a fresh
 * PostgreSQL database (limits shared through Redis). Its URL, its processes.
 */
let deployments = 0
const deploy = async (label, runners, logged) => {
  deployments++
  if (runners === 0) {
    // A file of its own per deployment: with `--repeat`, a round must not find the jobs of the one before.
    const [service, [, base]] = await serveProcess(["--port", "0", "--db", join(dir, `${label}-${deployments}.db`)],
      /effect-batch job service on (http\S+)/, "the service", logged, `run-${label}-${deployments}`)
    return { base, processes: [service] }
  }
  const database = `effect_batch_jobs_bench_${label.toLowerCase()}_${process.pid}`
  execFileSync("psql", [DATABASE_URL, "-q", "-c", `DROP DATABASE IF EXISTS ${database}`, "-c", `CREATE DATABASE ${database}`], { stdio: "ignore" })
  databases.push(database)
  const url = new URL(DATABASE_URL)
  url.pathname = `/${database}`
  const shared = REDIS_URL === undefined ? [] : ["--redis", REDIS_URL]
  const processes = []
  for (let i = 0; i < runners; i++) {
    const [runner] = await serveProcess(["--db", url.toString(), "--role", "runner", "--runner-port", String(await freePort()), ...shared],
      /effect-batch runner on/, `runner ${i}`, logged, `run-${label}-${deployments}-runner-${i}`)
    // As `npm run serve:cluster` starts them: the OS gives the API the CPU first.
    setPriority(runner.pid, Math.min(19, getPriority() + RUNNER_NICENESS))
    processes.push(runner)
  }
  const [api, [, base]] = await serveProcess(["--port", "0", "--db", url.toString(), "--role", "api"],
    /effect-batch job service on (http\S+)/, "the API", logged, `run-${label}-${deployments}-api`)
  return { base, processes: [api, ...processes] }
}

/** One run of the service: `jobs` jobs sharing the ITEMS prompts, with `probes` small submissions while they run. */
const serviceRun = async (label, subscribersPerJob, runners = 0, { jobs: jobCount, probes } = { jobs: JOBS, probes: PROBES }) => {
  const itemsPerJob = ITEMS / jobCount
  // The probes' items are run (and their CPU counted) too: per-item figures divide by all of them.
  const items = ITEMS + probes * PROBE_ITEMS
  const logged = { warnings: 0, lines: [] }
  const { base, processes } = await deploy(label, runners, logged)
  const cpuOfAll = () => processes.reduce((sum, child) => sum + cpuMsOf(child.pid), 0)
  const mainThreadsCpu = () => processes.reduce((sum, child) => sum + mainThreadCpuMsOf(child.pid), 0)
  await getJson(`${simulatorUrl}/reset`, { method: "POST" })
  const headers = { authorization: `Bearer ${API_KEY}` }
  const deadline = Date.now() + RUN_TIMEOUT_MS

  // 1. Every submission at once.
  for (const child of processes) if (instrumented(child)) child.kill("SIGUSR2")
  const cpuBefore = cpuOfAll()
  const mainBefore = mainThreadsCpu()
  const startedAt = Date.now()
  const started = performance.now()
  const submissions = await Promise.all(Array.from({ length: jobCount }, async (_, j) => {
    const body = JSON.stringify({ items: prompts.slice(j * itemsPerJob, (j + 1) * itemsPerJob), metadata: { bench: String(j) } })
    const t0 = performance.now()
    const response = await fetch(`${base}/jobs`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body })
    const text = await response.text()
    const latencyMs = performance.now() - t0
    if (response.status !== 202) throw new Error(`POST /jobs: ${response.status} ${text}`)
    const id = JSON.parse(text).id
    return { id, latencyMs, subscribers: Array.from({ length: subscribersPerJob }, () => subscribe(base, id, headers)) }
  }))
  const submittedMs = performance.now() - started
  const subscriberRuns = submissions.flatMap((s) => s.subscribers)
  // One submission at a time while the jobs run: what a client submitting now waits.
  const probing = (async () => {
    const latencies = []
    for (let p = 0; p < probes; p++) {
      await sleep(PROBE_EVERY_MS)
      const probeItems = Array.from({ length: PROBE_ITEMS }, (_, i) => `Probe ${p}, item ${i}: one short sentence.`)
      const t0 = performance.now()
      const response = await fetch(`${base}/jobs`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify({ items: probeItems })
      })
      await response.text()
      latencies.push(performance.now() - t0)
      if (response.status !== 202) fail(`${label}: probe submission ${p}: ${response.status}`)
    }
    return latencies
  })()

  // 2. Until every job is in a final state.
  let jobs = []
  for (;;) {
    jobs = (await getJson(`${base}/jobs?limit=200`, { headers })).jobs
    if (jobs.length === jobCount + probes && jobs.every((job) => !["queued", "running"].includes(job.state))) break
    if (Date.now() > deadline) {
      fail(`${label}: ${jobs.filter((job) => job.state === "finished").length} of ${jobCount + probes} jobs finished within ${RUN_TIMEOUT_MS / 1000} s`)
      break
    }
    await sleep(POLL_EVERY_MS)
  }
  const probeLatencies = await probing
  const cpuMs = cpuOfAll() - cpuBefore
  const mainThreadMs = mainThreadsCpu() - mainBefore
  const counts = await countsOf(processes)
  const apiCpuMs = runners === 0 ? undefined : cpuMsOf(processes[0].pid)
  const peakRssMb = Math.max(...processes.map((child) => peakRssMbOf(child.pid)))
  const provider = await providerCheck(label, probes)
  const makespanMs = Math.max(...jobs.map((job) => job.finishedAt ?? Infinity)) - startedAt
  for (const job of jobs) {
    if (job.state !== "finished" || job.counts.succeeded !== (job.counts.total === PROBE_ITEMS ? PROBE_ITEMS : itemsPerJob)) {
      fail(`${label}: job ${job.id} is ${job.state} with ${job.counts.succeeded} of ${job.counts.total} items succeeded`)
    }
  }

  // 3. The subscribers end with the final state event.
  const subscribers = await Promise.race([
    Promise.all(subscriberRuns),
    sleep(Math.max(5_000, deadline - Date.now())).then(() => undefined)
  ])
  if (subscribers === undefined) fail(`${label}: SSE subscribers still open 5 s after every job finished`)
  for (const sub of subscribers ?? []) {
    if (sub.finalState !== "finished") fail(`${label}: SSE ${sub.jobId}: ended without the finished state (${sub.finalState})`)
  }

  // 4. Results: every item of every job, succeeded, in input order.
  for (const { id } of submissions) {
    const response = await fetch(`${base}/jobs/${id}/results`, { headers })
    const lines = (await response.text()).trim().split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))
    const ok = lines.length === itemsPerJob && lines.every((line, i) => line.index === i && line.status === "succeeded")
    if (!ok) fail(`${label}: job ${id}: ${lines.length} result lines, not ${itemsPerJob} succeeded in order`)
  }
  for (const child of processes) await stop(child)
  if (logged.warnings > 0) console.log(`${label}: the service logged ${logged.warnings} warning(s), e.g. ${logged.lines.find((l) => /WARN|ERROR/.test(l))}`)

  const queueWait = jobs.map((job) => (job.startedAt ?? NaN) - job.createdAt)
  const jobSpan = jobs.map((job) => (job.finishedAt ?? NaN) - (job.startedAt ?? NaN))
  const latencies = (subscribers ?? []).flatMap((sub) => sub.latencies)
  const byType = {}
  for (const sub of subscribers ?? []) for (const [type, n] of Object.entries(sub.byType)) byType[type] = (byType[type] ?? 0) + n
  return {
    label,
    runners,
    jobs: jobCount,
    probes,
    items,
    apiCpuMs,
    submission: summary(submissions.map((s) => s.latencyMs)),
    probe: summary(probeLatencies),
    probeLatencies: probeLatencies.map(Math.round),
    submittedMs,
    makespanMs,
    itemsPerSecond: (items * 1000) / makespanMs,
    queueWait: summary(queueWait),
    jobSpan: summary(jobSpan),
    cpuMs,
    mainThreadMs,
    counts,
    peakRssMb,
    provider,
    sse: subscribersPerJob === 0 ? undefined : {
      subscribers: subscriberRuns.length,
      events: (subscribers ?? []).reduce((n, sub) => n + sub.events, 0),
      backlog: (subscribers ?? []).reduce((n, sub) => n + sub.backlog, 0),
      byType,
      progressWhileRunning: (subscribers ?? []).reduce((n, sub) => n + sub.progressWhileRunning, 0),
      latency: summary(latencies)
    }
  }
}

// --- the Batch.run baseline -----------------------------------------------------------------------

let baselines = 0
const batchRun = async () => {
  await getJson(`${simulatorUrl}/reset`, { method: "POST" })
  const { execArgv, env } = instrumentedBy(`batch-run-${++baselines}`, { service: false })
  const child = track(spawn(process.execPath, [...execArgv, fileURLToPath(import.meta.url), "batch-run", simulatorUrl, ...(untracedBaseline ? ["untraced"] : [])], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"]
  }))
  let out = ""
  child.stdout.on("data", (chunk) => (out += chunk))
  const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS)
  const [code] = await once(child, "exit")
  clearTimeout(timer)
  if (code !== 0) throw new Error(`the Batch.run process exited with ${code}`)
  const row = JSON.parse(out.trim().split("\n").pop())
  if (row.succeeded !== ITEMS) fail(`Batch.run: ${row.succeeded} of ${ITEMS} items succeeded`)
  return { ...row, provider: await providerCheck("Batch.run") }
}

// --- run and report -------------------------------------------------------------------------------

const began = performance.now()
/** One round: every run asked for, then the baseline. */
const round = async (n) => {
  const of = repeat === 1 ? "" : ` (round ${n} of ${repeat})`
  let withSse
  if (wanted("A")) {
    process.stderr.write(`run A${of}: ${JOBS} jobs × ${ITEMS_PER_JOB} items, ${JOBS * SUBSCRIBERS_PER_JOB} SSE subscribers\n`)
    withSse = await serviceRun("A", SUBSCRIBERS_PER_JOB)
  }
  let noSse
  if (wanted("B")) {
    process.stderr.write(`run B${of}: ${JOBS} jobs × ${ITEMS_PER_JOB} items, no subscribers\n`)
    noSse = await serviceRun("B", 0)
  }
  let large
  if (wanted("L")) {
    process.stderr.write(`run L${of}: one job of ${ITEMS} items, no subscribers\n`)
    large = await serviceRun("L", 0, 0, { jobs: 1, probes: 0 })
  }
  let perJob
  // Only when asked for (`--only J`): with run L, what each job costs apart from its items.
  if (only?.has("J")) {
    process.stderr.write(`run J${of}: ${JOBS_J} jobs of ${ITEMS / JOBS_J} items, no subscribers\n`)
    perJob = await serviceRun("J", 0, 0, { jobs: JOBS_J, probes: 0 })
  }
  const split = []
  if (DATABASE_URL !== undefined) {
    for (const runners of [1, 2].filter((n) => wanted(`S${n}`))) {
      process.stderr.write(`run S${runners}${of}: the API and ${runners} runner(s) on PostgreSQL, ${JOBS * SUBSCRIBERS_PER_JOB} SSE subscribers\n`)
      split.push(await serviceRun(`S${runners}`, SUBSCRIBERS_PER_JOB, runners))
    }
  } else if (n === 1 && (wanted("S1") || wanted("S2"))) {
    process.stderr.write("no DATABASE_URL: the split runs (an API and runners on PostgreSQL) are left out\n")
  }
  process.stderr.write(`Batch.run${of}: ${ITEMS} items\n`)
  const baseline = await batchRun()
  return { runs: [withSse, noSse, large, perJob, ...split].filter((run) => run !== undefined), baseline }
}
const rounds = []
for (let n = 1; n <= repeat; n++) rounds.push(await round(n))
await stop(simulatorProcess)
// The details are the last round's; with `--repeat`, the medians over the rounds follow them.
const { runs, baseline } = rounds.at(-1)

const boundMs = (ITEMS * LATENCY_MS) / CONCURRENCY
const achieved = (makespan, items = ITEMS) => ((items * LATENCY_MS) / makespan).toFixed(0)
const stats = (s) => `p50 ${ms(s.p50)}, p99 ${ms(s.p99)}, max ${ms(s.max)}`
/** µs of CPU per item run: a service run's items include its probes' (`run.items`); the baseline's are ITEMS. */
const perItemUs = (cpuMs, items = ITEMS) => (cpuMs * 1000) / items
/** A run's CPU per item over the baseline's: the figure the ≤ 1.5× goal is about. */
const cpuRatio = (run, base) => perItemUs(run.cpuMs, run.items) / perItemUs(base.cpuMs)
/** A run's (or the baseline's) CPU per item split between its main threads (event loops) and its other threads. */
const threadsLine = ({ cpuMs, mainThreadMs, items }) =>
  `  main thread ${perItemUs(mainThreadMs, items).toFixed(0)} µs per item, other threads ` +
  `${perItemUs(cpuMs - mainThreadMs, items).toFixed(0)} (V8's collector and compiler, libuv's pool)`
/** `--count`'s figures: fiber steps per item and scavenges. */
const countsLine = (counts, items = ITEMS) => `${(counts.steps / items).toFixed(0)} fiber steps per item, ${counts.scavenges} scavenges`

console.log(`\njob service: ${JOBS} jobs × ${ITEMS_PER_JOB} items, simulator ${LATENCY_MS} ms / 256 slots, profile concurrency ${CONCURRENCY}`)
console.log(`lower bound ${ms(boundMs)} = items × ${LATENCY_MS} ms / ${CONCURRENCY}`)
for (const run of runs) {
  const shape = run.runners === 0 ? "one process, SQLite" : `the API and ${run.runners} runner(s), PostgreSQL${REDIS_URL === undefined ? "" : ", limits in Redis"}`
  console.log(`\nrun ${run.label} (${shape}; ${run.sse === undefined ? "no SSE subscribers" : `${run.sse.subscribers} SSE subscribers`})`)
  if (run.jobs === 1) console.log(`  one job of ${ITEMS} items: what an item costs the service without the cost of each job`)
  else {
    if (run.label === "J") console.log(`  ${run.jobs} jobs of ${ITEMS / run.jobs} items: with run L, what each job costs`)
    console.log(`  submission (${run.jobs} concurrent POST /jobs)  ${stats(run.submission)}; all answered after ${ms(run.submittedMs)}`)
  }
  if (run.probes > 0) console.log(`  submission while they run (${run.probes} × ${PROBE_ITEMS} items, one at a time)  ${stats(run.probe)}`)
  console.log(`  makespan                 ${ms(run.makespanMs)}  (${(run.makespanMs / boundMs).toFixed(2)}× bound), ${run.itemsPerSecond.toFixed(0)} items/s, ` +
    `${achieved(run.makespanMs, run.items)} calls in flight on average (peak ${run.provider.peakInFlight})`)
  console.log(`  submitted → running      ${stats(run.queueWait)}`)
  console.log(`  running → finished       ${stats(run.jobSpan)} per job`)
  console.log(`  service CPU              ${ms(run.cpuMs)}, ${perItemUs(run.cpuMs, run.items).toFixed(0)} µs per item (${run.items} items)` +
    `${run.apiCpuMs === undefined ? "" : ` (the API ${ms(run.apiCpuMs)})`}; peak RSS ${run.peakRssMb.toFixed(0)} MB (the largest process)`)
  console.log(`  ${threadsLine(run)}`)
  if (run.counts !== undefined) console.log(`  counted (--count)        ${countsLine(run.counts, run.items)}`)
  if (run.sse !== undefined) {
    console.log(`  SSE delivery (receive − at)  ${stats(run.sse.latency)} over ${run.sse.latency.n} live events ` +
      `(${run.sse.events} received, ${run.sse.backlog} from the backlog not counted)`)
    console.log(`  SSE events by type       ${Object.entries(run.sse.byType).map(([type, n]) => `${type} ${n}`).join(", ")}`)
    // JobRunner publishes progress every 500 ms while a job runs: jobs running for seconds should show some.
    if (run.sse.progressWhileRunning === 0 && run.jobSpan.p50 > 2000) {
      console.log("  NOTE: no progress event arrived while the jobs ran (JobRunner.progressEvery is 500 ms); only the final one")
    }
  }
}
console.log(`\nBatch.run, same ${ITEMS} items, concurrency ${CONCURRENCY}, one process${untracedBaseline ? ", Effect's tracer off (--untraced-baseline)" : ""}`)
console.log(`  makespan                 ${ms(baseline.wallMs)}  (${(baseline.wallMs / boundMs).toFixed(2)}× bound), ` +
  `${achieved(baseline.wallMs)} calls in flight on average (peak ${baseline.provider.peakInFlight})`)
console.log(`  CPU                      ${ms(baseline.cpuMs)}, ${perItemUs(baseline.cpuMs).toFixed(0)} µs per item; peak RSS ${baseline.peakRssMb.toFixed(0)} MB`)
console.log(`  ${threadsLine(baseline)}`)
if (baseline.counts !== undefined) console.log(`  counted (--count)        ${countsLine(baseline.counts)}`)
if (counting) console.log("  (--count: the processes counted their steps, which slows them: CPU figures are not comparable with a run without)")
if (sitesDir !== undefined) console.log("  (--sites: the processes counted their steps by site, which slows them several times: CPU figures mean nothing)")
if (profileDir !== undefined || sqlDir !== undefined) {
  console.log(`  (${[profileDir && "--profile", sqlDir && "--sql"].filter(Boolean).join(", ")}: the processes were watched, which slows ` +
    "them: CPU figures are not comparable with a run without)")
}
console.log("\nagainst Batch.run")
for (const run of runs) {
  const moreUs = perItemUs(run.cpuMs, run.items) - perItemUs(baseline.cpuMs)
  console.log(`  run ${run.label.padEnd(3)} makespan ${(run.makespanMs / baseline.wallMs).toFixed(2)}×, CPU per item ${cpuRatio(run, baseline).toFixed(2)}× ` +
    `(${Math.abs(moreUs).toFixed(0)} µs ${moreUs < 0 ? "less" : "more"})` +
    (run.counts === undefined || baseline.counts === undefined ? "" : `, fiber steps per item ${((run.counts.steps / run.items) / (baseline.counts.steps / ITEMS)).toFixed(2)}×, ` +
      `scavenges ${(run.counts.scavenges / baseline.counts.scavenges).toFixed(2)}×`))
}

/** With runs L and J: what a job costs the service apart from its items, in ms of CPU (the same items in 1 and JOBS_J jobs). */
const perJobMs = (roundRuns) => {
  const [l, j] = ["L", "J"].map((label) => roundRuns.find((run) => run.label === label))
  return l === undefined || j === undefined ? undefined : (j.cpuMs - l.cpuMs) / (JOBS_J - 1)
}
if (perJobMs(runs) !== undefined) console.log(`  each job, apart from its items (runs J − L) ${perJobMs(runs).toFixed(1)} ms of CPU`)

if (repeat > 1) {
  console.log(`\nover ${repeat} rounds: median (lowest–highest); each ratio is to the Batch.run of its own round`)
  /** The main thread's CPU per item, and the other threads', over the rounds' runs (or baselines). */
  const threads = (measured) =>
    `main thread ${spread(measured.map((m) => perItemUs(m.mainThreadMs, m.items)), 0)}, ` +
    `other threads ${spread(measured.map((m) => perItemUs(m.cpuMs - m.mainThreadMs, m.items)), 0)}`
  console.log(`  Batch.run   CPU ${spread(rounds.map((r) => perItemUs(r.baseline.cpuMs)), 0)} µs per item ` +
    `(${threads(rounds.map((r) => r.baseline))})`)
  for (const { label } of runs) {
    const pairs = rounds.map((r) => [r.runs.find((run) => run.label === label), r.baseline])
    console.log(`  ${`run ${label}`.padEnd(9)}   CPU ${spread(pairs.map(([run]) => perItemUs(run.cpuMs, run.items)), 0)} µs per item, ` +
      `${spread(pairs.map(([run, base]) => cpuRatio(run, base)), 2)}× Batch.run; ` +
      `makespan ${spread(pairs.map(([run, base]) => run.makespanMs / base.wallMs), 2)}×`)
    console.log(`              (${threads(pairs.map(([run]) => run))})`)
  }
  if (perJobMs(runs) !== undefined) console.log(`  each job    ${spread(rounds.map((r) => perJobMs(r.runs)), 1)} ms of CPU apart from its items`)
}

const output = {
  jobs: JOBS,
  itemsPerJob: ITEMS_PER_JOB,
  concurrency: CONCURRENCY,
  latencyMs: LATENCY_MS,
  boundMs,
  runs,
  baseline,
  ...(repeat === 1 ? {} : { rounds }),
  errors
}
const outDir = file("../../.bench-out")
mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, "jobs.json"), JSON.stringify(output, null, 2) + "\n")
if (written.length > 0) {
  console.log("\nwritten for the measured windows (summarize a .cpuprofile with test/bench/profile-summary.mjs, a .sites.json with test/bench/step-sites.mjs):\n" +
    written.map((path) => `  ${path}`).join("\n"))
}
console.log(`\n${errors.length === 0 ? "no functional errors" : `${errors.length} functional error(s)`}, in ${((performance.now() - began) / 1000).toFixed(0)} s; figures in .bench-out/jobs.json`)
process.exit(errors.length === 0 ? 0 : 1)
