/**
 * effect-batch for LLM APIs: an OpenAI-compatible chat task with error
 * classification, token estimates and usage settlement (`OpenAiCompat`),
 * provider batch runs at about half the price (`BatchApi` over a
 * `BatchProvider` such as `OpenAiBatch` or `AnthropicBatch`), a
 * simulated OpenAI-compatible provider for tests, demos and benchmarks
 * (`Simulator`), the JSONL reader of prompt files (`JsonlInput`), and the
 * schemas of what an item asks for (`ChatRequest`).
 *
 * Needs `@effect/platform` (its `HttpClient`, `HttpServer` and `FileSystem`)
 * and, for `SimulatorServer`, `@effect/platform-node` (a dependency of the
 * package), on top of the core (`effect-batch`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as AnthropicBatch from "./AnthropicBatch.js"
/** @since 0.1.0 */
export * as BatchApi from "./BatchApi.js"
/** @since 0.1.0 */
export * as BatchProvider from "./BatchProvider.js"
/** @since 0.1.0 */
export * as ChatRequest from "./ChatRequest.js"
/** @since 0.1.0 */
export * as JsonlInput from "./JsonlInput.js"
/** @since 0.1.0 */
export * as OpenAiBatch from "./OpenAiBatch.js"
/** @since 0.1.0 */
export * as OpenAiCompat from "./OpenAiCompat.js"
/** @since 0.1.0 */
export * as Simulator from "./Simulator.js"
/** @since 0.1.0 */
export * as SimulatorServer from "./SimulatorServer.js"
