#!/usr/bin/env node
/**
 * The `effect-batch` executable: the CLI (`cli/Cli.ts`) on Node's file
 * system, terminal and HTTP client, with the process's exit code set from
 * the command's outcome (0 all items succeeded, 1 some did not, 2 usage or
 * setup error, 130 interrupted).
 *
 * What it does not promise: anything when imported; this module runs the
 * process.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Cli from "./cli/Cli.js"
import * as CliError from "./cli/CliError.js"

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)

NodeRuntime.runMain(Cli.main(process.argv).pipe(Effect.provide(platform)), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    const code = Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : CliError.exitCodeOf(exit)
    process.exitCode = code
    onExit(code)
  }
})
