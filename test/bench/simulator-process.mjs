// The simulated provider in a process of its own, so that it does not share an event loop with the
// runner under test: `node simulator-process.mjs '<Simulator.Options as JSON>'`. Prints its URL on
// the first line of stdout and serves until killed.
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
import { Simulator } from "../../dist/llm/index.js"

const options = JSON.parse(process.argv[2] ?? "{}")
const server = NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })

await Effect.runPromise(
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    console.log(simulator.url)
    yield* Effect.never
  }).pipe(Effect.provide(Simulator.layer(options).pipe(Layer.provide(server))))
)
