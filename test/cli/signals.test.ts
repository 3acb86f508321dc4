/**
 * Ctrl-C as a terminal sends it: SIGINT to the whole foreground process
 * group, so the launcher (npm, npx, tsx) gets it as well as the CLI, and may
 * pass it on again. Each launcher is started in a process group of its own
 * and the group is signalled once the run is under way.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-signals-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const root = new URL("../../", import.meta.url).pathname

interface Ended {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const lineCount = (path: string) => existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((l) => l !== "").length : 0

/**
 * Starts `command` in its own process group; once `out` has `after` lines,
 * sends SIGINT to the group, and again `againAfterMs` later if given.
 */
const interrupt = (command: string, args: ReadonlyArray<string>, out: string, after: number, againAfterMs?: number) =>
  Effect.async<Ended>((resume) => {
    const child = spawn(command, args, { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => stdout += String(chunk))
    child.stderr.on("data", (chunk) => stderr += String(chunk))
    const signal = () => {
      try {
        process.kill(-child.pid!, "SIGINT")
      } catch {
        // The group has already ended.
      }
    }
    const timer = setInterval(() => {
      if (lineCount(out) < after) return
      clearInterval(timer)
      signal()
      if (againAfterMs !== undefined) setTimeout(signal, againAfterMs)
    }, 10)
    child.on("close", (code, signal) => {
      clearInterval(timer)
      resume(Effect.succeed({ code, signal, stdout, stderr }))
    })
    return Effect.sync(() => {
      clearInterval(timer)
      signal()
    })
  })

const run = (out: string, extra: ReadonlyArray<string>) => [
  "src/bin.ts",
  "run",
  "examples/data/prompts.jsonl",
  "--out",
  out,
  "--simulate",
  "--progress",
  "plain",
  ...extra
]

const checkpointed = (name: string) => {
  const out = join(dir, `${name}.jsonl`)
  const db = join(dir, `${name}.db`)
  return { out, db, args: run(out, ["--run-id", name, "--db", db]) }
}

/** The run stopped gracefully: said so, skipped what it had not started, and said how to resume. */
const expectGracefulStop = (ended: Ended, resumable: boolean) => {
  expect(ended.stderr).toContain("stopping: no new calls")
  expect(ended.stderr).toMatch(/stopped before the end: \d+ items were not started/)
  expect(ended.stderr).not.toContain("interrupted; the report so far")
  if (resumable) expect(ended.stderr).toMatch(/resume with: effect-batch run examples\/data\/prompts\.jsonl --out /)
}

describe("Ctrl-C to the process group", () => {
  it.live("node --import tsx: one Ctrl-C stops gracefully and prints the resume command", () =>
    Effect.gen(function*() {
      const { args, out } = checkpointed("node-import")
      const ended = yield* interrupt(process.execPath, ["--import", "tsx", ...args], out, 30)
      expectGracefulStop(ended, true)
      expect(ended.code).toBe(130)
    }))

  it.live("npx tsx (npm, then tsx, pass the signal on again): still one graceful stop", () =>
    Effect.gen(function*() {
      const { args, out } = checkpointed("npx-tsx")
      const ended = yield* interrupt("npx", ["--no-install", "tsx", ...args], out, 30)
      expectGracefulStop(ended, true)
      // npm ends itself with the signal once its child has ended.
      expect(ended.code === 130 || ended.signal === "SIGINT").toBe(true)
    }))

  it.live("npm start: one graceful stop", () =>
    Effect.gen(function*() {
      const out = join(root, "results.jsonl")
      rmSync(out, { force: true })
      const ended = yield* interrupt("npm", ["start"], out, 30)
      expectGracefulStop(ended, false)
    }))

  it.live("a second Ctrl-C (after the first second) interrupts the calls in flight, and the resume command is still printed", () =>
    Effect.gen(function*() {
      const { args, out } = checkpointed("twice")
      // Calls of 4 s: the second signal, 1.5 s after the first, finds calls still in flight.
      const ended = yield* interrupt(
        process.execPath,
        ["--import", "tsx", ...args, "--concurrency", "4", "--sim-latency-ms", "4000", "--sim-jitter", "0"],
        out,
        4,
        1_500
      )
      expect(ended.stderr).toContain("stopping: no new calls")
      expect(ended.stderr).toContain("interrupted; the report so far")
      expect(ended.stderr).toMatch(/resume with: effect-batch run examples\/data\/prompts\.jsonl --out .* --run-id twice/)
      expect(ended.code).toBe(130)
    }))
})
