/**
 * The command line run in-process against a simulator on loopback: what the
 * CLI's tests share.
 */
import { ConfigProvider, Effect } from "effect"
import * as Cli from "../../src/cli/Cli.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as TestConsole from "./TestConsole.js"

/** The simulator's API key, read by the CLI from `SIM_KEY`. */
export const apiKey = "k"

/** Runs the CLI on `args` with a captured console; the exit code and what was printed. */
export const cli = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const console = yield* TestConsole.make
    const code = yield* console.capture(Cli.main(["node", "effect-batch", ...args]))
    return { code, out: console.out.join("\n"), err: console.err.join("\n") }
  }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["SIM_KEY", apiKey]]))))

/** Runs `f` with a simulator that answers after `latencyMs` and wants `apiKey`. */
export const withSimulator = <A, E, R>(f: (simulator: Simulator.Service) => Effect.Effect<A, E, R>, latencyMs = 2) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(SimulatorServer.layer({ latency: { baseMs: latencyMs }, apiKey }))
  )

/** `run input --out out` against `simulator`, quietly. */
export const against = (simulator: Simulator.Service, input: string, out: string) => [
  "run",
  input,
  "--out",
  out,
  "--base-url",
  `${simulator.url}/v1`,
  "--model",
  "sim-chat",
  "--api-key-env",
  "SIM_KEY",
  "--progress",
  "none"
]
