/**
 * effect-batch: run large batches of IO-bound work — LLM and HTTP calls above
 * all — as fast as the provider allows, never past its limits.
 *
 * This is the core: it needs only `effect`. The wings have entry points of
 * their own, so that a program pays only for the packages it uses:
 *
 * - `effect-batch/llm` — the OpenAI-compatible adapter, the simulated
 *   provider, the JSONL input reader (`@effect/platform`);
 * - `effect-batch/sql` — the SQL backends of the stores (`@effect/sql`);
 * - `effect-batch/service` — the job service: HTTP API, durable jobs,
 *   dashboard (`@effect/workflow`, `@effect/cluster`, `@effect/sql`);
 * - `effect-batch/redis` — rate and concurrency limits shared by several
 *   processes through Redis (`ioredis`);
 * - the `effect-batch` command (`src/cli/`, `src/bin.ts`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Batch from "./Batch.js"
/** @since 0.1.0 */
export * as BatchReport from "./BatchReport.js"
/** @since 0.2.0 */
export * as BatchMetrics from "./BatchMetrics.js"
/** @since 0.1.0 */
export * as Budget from "./Budget.js"
/** @since 0.1.0 */
export * as CheckpointStore from "./CheckpointStore.js"
/** @since 0.1.0 */
export * as ConcurrencyLimiter from "./ConcurrencyLimiter.js"
/** @since 0.1.0 */
export * as Idempotency from "./Idempotency.js"
/** @since 0.1.0 */
export * as LimitAlgorithm from "./LimitAlgorithm.js"
/** @since 0.2.0 */
export * as PrometheusText from "./PrometheusText.js"
/** @since 0.1.0 */
export * as Progress from "./Progress.js"
/** @since 0.1.0 */
export * as RateLimiter from "./RateLimiter.js"
/** @since 0.1.0 */
export * as ResultCache from "./ResultCache.js"
/** @since 0.1.0 */
export * as RetryPolicy from "./RetryPolicy.js"
/** @since 0.1.0 */
export * as TaskError from "./TaskError.js"
/** @since 0.1.0 */
export * as TaskResult from "./TaskResult.js"
