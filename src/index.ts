/**
 * effect-batch: run large batches of IO-bound work — LLM and HTTP calls above
 * all — as fast as the provider allows, never past its limits.
 *
 * The job service (`JobService`, `JobApi`, `JobHttp`, `Jobs`, `JobRunner`,
 * `JobStore`, `JobEvents`, `ProviderProfiles`, `ApiKeys`, `Dashboard`) is not
 * re-exported here: it needs `@effect/cluster` and `@effect/workflow`, which
 * the core does not. Import it by path, e.g. `effect-batch/JobService`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Batch from "./Batch.js"
/** @since 0.1.0 */
export * as BatchReport from "./BatchReport.js"
/** @since 0.1.0 */
export * as Budget from "./Budget.js"
/** @since 0.1.0 */
export * as CheckpointStore from "./CheckpointStore.js"
/** @since 0.1.0 */
export * as ConcurrencyLimiter from "./ConcurrencyLimiter.js"
/** @since 0.1.0 */
export * as LimitAlgorithm from "./LimitAlgorithm.js"
/** @since 0.1.0 */
export * as OpenAiCompat from "./OpenAiCompat.js"
/** @since 0.1.0 */
export * as Progress from "./Progress.js"
/** @since 0.1.0 */
export * as RateLimiter from "./RateLimiter.js"
/** @since 0.1.0 */
export * as ResultCache from "./ResultCache.js"
/** @since 0.1.0 */
export * as RetryPolicy from "./RetryPolicy.js"
/** @since 0.1.0 */
export * as Simulator from "./Simulator.js"
/** @since 0.1.0 */
export * as SqlCheckpointStore from "./SqlCheckpointStore.js"
/** @since 0.1.0 */
export * as TaskError from "./TaskError.js"
/** @since 0.1.0 */
export * as TaskResult from "./TaskResult.js"
