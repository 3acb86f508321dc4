/**
 * The simulated provider (`Simulator`) served by Node's HTTP server on a
 * loopback address: what the CLI's `simulate` and `--simulate`, the job
 * service's default profile, the tests and the benchmarks run against.
 *
 * What it does not promise: another host than 127.0.0.1 (the simulator is
 * for this machine only); a port that cannot be bound fails the layer with
 * the server's `ServeError`.
 *
 * @since 0.1.0
 */
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import * as Simulator from "./Simulator.js"

/**
 * The simulator on 127.0.0.1:`port` (default 0: any free port; its URL is
 * `Simulator.url`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Simulator.Options = {},
  port = 0
): Layer.Layer<Simulator.Simulator, HttpServerError.ServeError> =>
  Simulator.layer(options).pipe(Layer.provide(NodeHttpServer.layer(() => createServer(), { port, host: "127.0.0.1" })))
