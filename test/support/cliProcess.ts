/**
 * The CLI as a user runs it, in a child process (`node --import tsx
 * src/bin.ts …`), for the kill tests: SIGKILLed as soon as a condition
 * holds, checked every 5 ms.
 */
import { Effect } from "effect"
import { spawn } from "node:child_process"

const root = new URL("../../", import.meta.url).pathname

/** Runs the CLI with `args` and `env` added; SIGKILLs it once `killWhen` holds, if given. */
export const runCli = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>, killWhen?: () => boolean) =>
  Effect.async<{ readonly killed: boolean, readonly code: number | null }>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/bin.ts", ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: "ignore"
    })
    let killed = false
    const timer = killWhen === undefined ? undefined : setInterval(() => {
      if (killWhen()) {
        killed = child.kill("SIGKILL")
        clearInterval(timer)
      }
    }, 5)
    child.on("exit", (code) => {
      clearInterval(timer)
      resume(Effect.succeed({ killed, code }))
    })
  })

/** `run INPUT --out OUT` against a simulator at `url`, its key in `keyEnv`, model `sim-chat`: what the kill tests add flags to. */
export const runAgainst = (url: string, input: string, out: string, keyEnv: string): ReadonlyArray<string> => [
  "run",
  input,
  "--out",
  out,
  "--base-url",
  `${url}/v1`,
  "--api-key-env",
  keyEnv,
  "--model",
  "sim-chat"
]
