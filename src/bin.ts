#!/usr/bin/env node
/**
 * The `effect-batch` executable: the CLI (`cli/Cli.ts`) on Node's file
 * system, terminal and HTTP client, with the process's exit code set from
 * the command's outcome (0 all items succeeded, 1 some did not, 2 usage or
 * setup error, 130 interrupted). The first SIGINT or SIGTERM stops a run
 * gracefully, the second at once.
 *
 * What it does not promise: anything when imported; this module runs the
 * process.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Cli from "./cli/Cli.js"
import * as CliError from "./cli/CliError.js"
import * as StopSignal from "./cli/StopSignal.js"

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici, StopSignal.layerProcess)

// Not NodeRuntime.runMain: it interrupts the program at the first SIGINT, and a run should first stop
// gracefully (StopSignal: the first signal lets calls in flight finish, the second interrupts them).
const keepAlive = setInterval(() => {}, 2 ** 31 - 1)
const fiber = Effect.runFork(Cli.main(process.argv).pipe(Effect.provide(platform)))
fiber.addObserver((exit) => {
  clearInterval(keepAlive)
  process.exit(Exit.isSuccess(exit) ? exit.value : CliError.exitCodeOf(exit))
})
