/**
 * The job service as a real child process (`node --import tsx src/bin.ts
 * serve`), for tests that kill it: ready once it prints
 * `effect-batch job service on http://127.0.0.1:PORT` (a runner:
 * `effect-batch runner on HOST:PORT`), SIGKILLed or SIGTERMed on demand,
 * and in any case when its scope closes (what it printed then goes to stderr
 * if the scope failed or was interrupted, so a hung test can be read).
 * `killAll` is the backstop for an `afterAll`: it SIGKILLs every child
 * started here that is still alive.
 */
import { Data, Effect, Exit } from "effect"
import type { Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"

const root = new URL("../../", import.meta.url).pathname
/** An API's URL, or a runner's address (`--role runner` serves no HTTP). */
const ready = /effect-batch (?:job service on (http:\/\/127\.0\.0\.1:\d+)|runner on (\S+:\d+))/
/** Output kept for failure messages: the last this many characters. */
const keep = 64 * 1024

export class ServiceExited extends Data.TaggedError("ServiceExited")<{
  readonly code: number | null
  readonly signal: string | null
  readonly output: string
}> {
  override get message(): string {
    return `the service exited (code ${this.code}, signal ${this.signal}) before it was ready:\n${this.output}`
  }
}

export interface Options {
  /** SQLite file for jobs and the workflow journal, or a postgres:// URL. */
  readonly db: string
  /** Provider profiles file (JSON). */
  readonly profiles: string
  /** Added to this process's environment, e.g. `EFFECT_BATCH_API_KEYS`. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** More `serve` flags, e.g. `--role runner --runner-port N`. */
  readonly args?: ReadonlyArray<string> | undefined
}

export interface ServiceProcess {
  /** `http://127.0.0.1:PORT`; for a runner, its cluster address `host:port`. */
  readonly url: string
  readonly pid: number
  /** What it printed so far (stdout and stderr, the last 64 KiB). */
  readonly output: () => string
  /** SIGKILL, then wait until it is gone. */
  readonly kill: Effect.Effect<void>
  /** SIGTERM (a graceful stop), then wait until it is gone. */
  readonly stop: Effect.Effect<void>
}

const alive = new Set<ChildProcess>()

/** SIGKILLs every child started here that has not exited. */
export const killAll = (): void => {
  for (const child of alive) child.kill("SIGKILL")
}

const isGone = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

const signalAndWait = (child: ChildProcess, signal: NodeJS.Signals): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (isGone(child)) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill(signal)
  })
const killAndWait = (child: ChildProcess) => signalAndWait(child, "SIGKILL")

/** Starts `serve --port 0` and waits until it prints its URL; the scope's end kills it. */
export const start = (options: Options): Effect.Effect<ServiceProcess, ServiceExited, Scope.Scope> =>
  Effect.gen(function*() {
    let output = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "src/bin.ts", "serve", "--port", "0", "--db", options.db, "--profiles", options.profiles, ...options.args ?? []],
          { cwd: root, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] }
        )
        alive.add(child)
        child.once("exit", () => alive.delete(child))
        // Always drained, so the child never blocks on a full pipe.
        const append = (data: Buffer) => {
          output = (output + data.toString("utf8")).slice(-keep)
        }
        child.stdout!.on("data", append)
        child.stderr!.on("data", append)
        return child
      }),
      (child, exit) =>
        Effect.zipRight(
          killAndWait(child),
          Exit.isFailure(exit) ? Effect.sync(() => process.stderr.write(`service process ${child.pid}:\n${output}\n`)) : Effect.void
        )
    )
    const url = yield* Effect.async<string, ServiceExited>((resume) => {
      const check = () => {
        const match = ready.exec(output)
        if (match !== null) {
          stop()
          resume(Effect.succeed((match[1] ?? match[2])!))
        }
      }
      const exited = (code: number | null, signal: string | null) => {
        stop()
        resume(Effect.fail(new ServiceExited({ code, signal, output })))
      }
      const stop = () => {
        child.stdout!.off("data", check)
        child.off("exit", exited)
      }
      // After `append` (registered first), so `output` already holds the chunk.
      child.stdout!.on("data", check)
      child.once("exit", exited)
      check()
      if (isGone(child)) exited(child.exitCode, child.signalCode)
      return Effect.sync(stop)
    })
    return { url, pid: child.pid!, output: () => output, kill: killAndWait(child), stop: signalAndWait(child, "SIGTERM") }
  })
