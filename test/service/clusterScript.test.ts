/**
 * `npm run serve:cluster` (`scripts/cluster.mjs`), as a user runs it: one API
 * and a runner on this machine, on a PostgreSQL database it makes, limits in
 * Redis, the simulator as the provider. A job submitted to the API runs on the
 * runner; the runner runs at the niceness it was given (the API at the
 * script's); a bad `--runner-niceness` is refused before anything starts.
 *
 * CI sets DATABASE_URL and REDIS_URL; without them the suite is skipped.
 */
import { describe, expect, it } from "@effect/vitest"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { once } from "node:events"
import { type AddressInfo, createServer } from "node:net"
import { getPriority } from "node:os"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { afterAll } from "vitest"
import parse from "parse-prometheus-text-format"
import { sum } from "../support/prometheus.js"

const databaseUrl = process.env.DATABASE_URL
const redisUrl = process.env.REDIS_URL
const script = fileURLToPath(new URL("../../scripts/cluster.mjs", import.meta.url))
const key = "cluster-script-key-0123456789"
const database = `effect_batch_cluster_script_${process.pid}`
const started: Array<ChildProcess> = []

const psql = (statement: string) => execFileSync("psql", [databaseUrl!, "-q", "-c", statement], { stdio: "ignore" })

afterAll(() => {
  // Each script leads a process group of its own, with the processes it started.
  for (const child of started) {
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch {
      // Gone already.
    }
  }
  if (databaseUrl !== undefined) psql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
})

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** The script with `args`; its output lines as they come. */
const run = (args: ReadonlyArray<string>) => {
  const url = new URL(databaseUrl!)
  url.pathname = `/${database}`
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, DATABASE_URL: url.toString(), REDIS_URL: redisUrl, EFFECT_BATCH_API_KEYS: `t1=${key}` },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true
  })
  started.push(child)
  const lines: Array<string> = []
  const waiters: Array<() => void> = []
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => {
      lines.push(line)
      for (const wake of waiters.splice(0)) wake()
    })
  }
  /** Resolves once a line matches `pattern`; rejects if the script exits first or after 90 s. */
  const lineMatching = (pattern: RegExp) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} within 90 s:\n${lines.join("\n")}`)), 90_000)
      const check = () => {
        for (const line of lines) {
          const match = pattern.exec(line)
          if (match !== null) {
            clearTimeout(timer)
            return resolve(match)
          }
        }
        if (child.exitCode !== null) {
          clearTimeout(timer)
          return reject(new Error(`the script exited (${child.exitCode}) first:\n${lines.join("\n")}`))
        }
        waiters.push(check)
      }
      child.on("exit", () => setTimeout(check, 50))
      check()
    })
  return { child, lines, lineMatching }
}

/** The niceness of the script's child whose command line contains `marker`. */
const nicenessOf = (parent: number, marker: string): number => {
  const rows = execFileSync("ps", ["-o", "ni=,args=", "--ppid", String(parent)], { encoding: "utf8" }).trim().split("\n")
  const row = rows.find((line) => line.includes(marker))
  if (row === undefined) throw new Error(`no child of ${parent} runs ${marker}:\n${rows.join("\n")}`)
  return Number(row.trim().split(/\s+/)[0])
}

describe.skipIf(databaseUrl === undefined || redisUrl === undefined)("npm run serve:cluster", () => {
  it("starts one API and a runner at niceness +10 that runs a submitted job and counts it on its /metrics; stops them all on SIGTERM", async () => {
    const port = await freePort()
    const metricsPort = await freePort()
    const script = run(["--runners", "1", "--port", String(port), "--runner-port", String(await freePort()), "--runner-metrics-port", String(metricsPort)])
    const [, ready, told] = await script.lineMatching(/one API on port (\d+) and 1 runner\(s\) at niceness \+(\d+)/)
    expect(ready).toBe(String(port))
    expect(told).toBe("10")
    const own = getPriority()
    expect(nicenessOf(script.child.pid!, "--role runner")).toBe(Math.min(19, own + 10))
    expect(nicenessOf(script.child.pid!, "--role api")).toBe(own)

    const headers = { "authorization": `Bearer ${key}`, "content-type": "application/json" }
    const submitted = await fetch(`http://127.0.0.1:${port}/jobs`, {
      method: "POST",
      headers,
      body: JSON.stringify({ items: ["one", "two", "three"] })
    })
    expect(submitted.status).toBe(202)
    const { id } = await submitted.json() as { id: string }
    let job: { state: string, counts: { succeeded: number } } | undefined
    for (let i = 0; i < 600 && !["finished", "failed", "cancelled", "stopped"].includes(job?.state ?? ""); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      job = await (await fetch(`http://127.0.0.1:${port}/jobs/${id}`, { headers })).json() as typeof job
    }
    expect(job?.state).toBe("finished")
    expect(job?.counts.succeeded).toBe(3)
    await script.lineMatching(new RegExp(`\\[runner 1\\].*${id}`))
    // The runner's own /metrics, on the port given, behind the same keys as the API: the job's three items.
    await script.lineMatching(new RegExp(`\\[runner 1\\]\\s+metrics\\s+http://127\\.0\\.0\\.1:${metricsPort}/metrics`))
    const scraped = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { headers })
    expect(scraped.status).toBe(200)
    expect(sum(parse(await scraped.text()), "effect_batch_items_total", { batch: "job" })).toBe(3)

    script.child.kill("SIGTERM")
    await once(script.child, "exit")
    await script.lineMatching(/\[api\] exited/)
    await script.lineMatching(/\[runner 1\] exited/)
  }, 180_000)

  it("refuses a --runner-niceness it cannot use, before starting anything", async () => {
    for (const bad of ["20", "-5", "ten"]) {
      const script = run([`--runner-niceness=${bad}`])
      const [code] = await once(script.child, "exit")
      expect(code).toBe(2)
      expect(script.lines.join("\n")).toContain(`--runner-niceness: a whole number from 0 (the API's priority) to 19 (the lowest), not ${bad}`)
      // Nothing was started: every started process's lines are prefixed with its name.
      expect(script.lines.filter((line) => line.startsWith("["))).toEqual([])
    }
  })
})
