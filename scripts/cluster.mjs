// The job service split over processes on this machine: one API (`serve --role api`) and N runners
// (`serve --role runner`) on one PostgreSQL database, every profile's limits shared through Redis.
//   npm run serve:cluster                       two runners, the simulator as the provider
//   npm run serve:cluster -- --runners 3 --profiles profiles.json
//   npm run serve:cluster -- --runner-niceness 0    runners at the API's CPU priority
//   npm run serve:cluster -- --runner-metrics-port 9464   runner i serves its /metrics on port 9464 + i (the default)
// Needs PostgreSQL and Redis running (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/effect_batch,
// made if missing; REDIS_URL, default redis://127.0.0.1:6379). Without --profiles, a simulator (3 000
// requests a minute) is started beside them and is the only profile. Ctrl-C stops every process (running
// chunks finish first); a second Ctrl-C stops them at once. Every process's output is prefixed with its name.
// The runners run at niceness 10 (--runner-niceness): on one machine, the OS gives the API the CPU first, so that
// a submission does not wait behind the runners' work (the jobs bench's split runs start them so too).
// Every process gets the same API keys (EFFECT_BATCH_API_KEYS, or one made for this start and printed), which the
// API asks of its callers and each runner of its /metrics' scrapers.
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, writeFileSync } from "node:fs"
import { getPriority, setPriority, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { parseArgs } from "node:util"
import pg from "pg"

const { values } = parseArgs({
  options: {
    "runners": { type: "string", default: "2" },
    "profiles": { type: "string" },
    "port": { type: "string", default: "8080" },
    "runner-port": { type: "string", default: "34431" },
    "runner-metrics-port": { type: "string", default: "9464" },
    "runner-niceness": { type: "string", default: "10" }
  }
})
const runners = Number(values.runners)
if (!Number.isInteger(runners) || runners < 1) {
  console.error(`--runners: a whole number of runners, 1 or more, not ${values.runners}`)
  process.exit(2)
}
const niceness = Number(values["runner-niceness"])
if (!Number.isInteger(niceness) || niceness < 0 || niceness > 19) {
  console.error(`--runner-niceness: a whole number from 0 (the API's priority) to 19 (the lowest), not ${values["runner-niceness"]}`)
  process.exit(2)
}
const metricsPort = Number(values["runner-metrics-port"])
if (!Number.isInteger(metricsPort) || metricsPort < 1 || metricsPort + runners > 65536) {
  console.error(`--runner-metrics-port: the port of runner 1's /metrics (runner i's is that + i − 1), not ${values["runner-metrics-port"]}`)
  process.exit(2)
}
const madeKey = process.env.EFFECT_BATCH_API_KEYS === undefined ? `eb_${randomBytes(24).toString("base64url")}` : undefined
const env = madeKey === undefined ? process.env : { ...process.env, EFFECT_BATCH_API_KEYS: `default=${madeKey}` }
const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/effect_batch"
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const bin = new URL("../src/bin.ts", import.meta.url).pathname
const children = []

/**
 * Starts `args` under tsx at `nice` (added to this process's niceness), each output line prefixed with `name`;
 * resolves once a line matches `ready`.
 */
const start = (name, args, ready, nice = 0) =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", bin, ...args], { stdio: ["ignore", "pipe", "pipe"], env })
    children.push(child)
    if (nice > 0) setPriority(child.pid, Math.min(19, getPriority() + nice))
    let started = false
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        console.log(`[${name}] ${line}`)
        const match = ready.exec(line)
        if (!started && match !== null) {
          started = true
          resolve(match)
        }
      })
    }
    child.on("exit", (code, signal) => {
      console.log(`[${name}] exited (${signal ?? code})`)
      if (!started) reject(new Error(`${name} exited before it was ready`))
    })
  })

// The database, made if it is not there yet.
const database = new URL(databaseUrl).pathname.slice(1)
const admin = new URL(databaseUrl)
admin.pathname = "/postgres"
const client = new pg.Client({ connectionString: admin.toString() })
try {
  await client.connect()
  const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [database])
  if (found.rowCount === 0) {
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(database)}`)
    console.log(`made the database ${database}`)
  }
} catch (error) {
  console.error(`cannot reach PostgreSQL at ${databaseUrl}: ${error.message}\n` +
    "start it (e.g. pg_ctlcluster 15 main start) or set DATABASE_URL")
  process.exit(2)
} finally {
  await client.end().catch(() => undefined)
}

const stopAll = (signal) => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal)
}
let stops = 0
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    stopAll(++stops === 1 ? "SIGTERM" : "SIGKILL")
    if (stops > 1) process.exit(130)
  })
}

try {
  let profiles = values.profiles
  if (profiles === undefined) {
    // It prints its OpenAI base URL (`…/v1`) first.
    const [, baseUrl] = await start("simulator", ["simulate", "--port", "0", "--rpm", "3000", "--capacity", "64"], /^(http\S+)$/)
    profiles = join(mkdtempSync(join(tmpdir(), "effect-batch-cluster-")), "profiles.json")
    writeFileSync(profiles, JSON.stringify({
      profiles: [{ name: "simulator", baseUrl, models: ["sim-chat"], concurrency: 32, requestsPerMinute: 3000 }]
    }))
  }
  const common = ["serve", "--db", databaseUrl, "--profiles", profiles]
  // One at a time: each prints when it is up.
  for (let i = 0; i < runners; i++) {
    const ports = ["--runner-port", String(Number(values["runner-port"]) + i), "--metrics-port", String(metricsPort + i)]
    await start(`runner ${i + 1}`, [...common, "--redis", redisUrl, "--role", "runner", ...ports], /effect-batch runner on/, niceness)
  }
  await start("api", [...common, "--role", "api", "--port", values.port], /effect-batch job service on/)
  console.log(`\none API on port ${values.port} and ${runners} runner(s)${niceness > 0 ? ` at niceness +${niceness}` : ""}; Ctrl-C stops them all`)
  if (madeKey !== undefined) {
    console.log(`API key ${madeKey} (tenant "default", for the API and the runners' /metrics; made for this start: set EFFECT_BATCH_API_KEYS to keep keys)`)
  }
} catch (error) {
  console.error(error.message)
  stopAll("SIGKILL")
  process.exit(1)
}
