/**
 * effect-batch's job service: submit a batch over HTTP and get an id, follow
 * it over SSE, read its results, cancel it, replay its dead letters; jobs are
 * durable `@effect/workflow` executions. `JobService` composes it; the HTTP
 * contract (`JobApi`) can be used alone to derive a typed client.
 *
 * Needs `@effect/platform`, `@effect/sql`, `@effect/workflow` and
 * `@effect/cluster` (with its peer `@effect/rpc`), on top of the core
 * (`effect-batch`) and `effect-batch/llm`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ApiKeys from "./ApiKeys.js"
/** @since 0.1.0 */
export * as Dashboard from "./Dashboard.js"
/** @since 0.1.0 */
export * as InputFolder from "./InputFolder.js"
/** @since 0.1.0 */
export * as Job from "./Job.js"
/** @since 0.1.0 */
export * as JobApi from "./JobApi.js"
/** @since 0.1.0 */
export * as JobEvents from "./JobEvents.js"
/** @since 0.1.0 */
export * as JobHttp from "./JobHttp.js"
/** @since 0.1.0 */
export * as JobRunner from "./JobRunner.js"
/** @since 0.1.0 */
export * as JobService from "./JobService.js"
/** @since 0.1.0 */
export * as JobStore from "./JobStore.js"
/** @since 0.1.0 */
export * as JobWorkflow from "./JobWorkflow.js"
/** @since 0.1.0 */
export * as Jobs from "./Jobs.js"
/** @since 0.1.0 */
export * as ProviderProfiles from "./ProviderProfiles.js"
/** @since 0.2.0 */
export * as ServiceMetrics from "./ServiceMetrics.js"
/** @since 0.1.0 */
export * as SqlJobStore from "./SqlJobStore.js"
