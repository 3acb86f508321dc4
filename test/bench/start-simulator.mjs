// Starts the simulated provider in a process of its own (`simulator-process.mjs`), for the benches that need one
// beside the runner under test.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"

/** The simulator with `options` (Simulator.Options), once it serves: its URL, and `stop` to kill it. */
export const startSimulator = async (options) => {
  const child = spawn(process.execPath, [fileURLToPath(new URL("simulator-process.mjs", import.meta.url)), JSON.stringify(options)], {
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
