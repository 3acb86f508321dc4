/**
 * The whole job service as one layer: the `JobStore` and the workflow engine
 * on the `SqlClient` in context (`@effect/cluster`'s `SingleRunner` with
 * `ClusterWorkflowEngine`: one process, jobs resumed when it starts again),
 * the runner, the provider profiles, and the HTTP API on the `HttpServer` in
 * context. `serve` (the CLI command) gives it SQLite and a port; tests give
 * it `NodeHttpServer.layerTest`.
 *
 * On start it looks after every job left queued or running: the engine
 * resumes executions it journaled by itself; a job stored but never started
 * (the process died in between) is started.
 *
 * What it does not promise: several processes on one database (that needs
 * `@effect/cluster`'s multi-runner layers on Postgres, not wired here).
 *
 * @since 0.1.0
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import * as SingleRunner from "@effect/cluster/SingleRunner"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ApiKeys from "./ApiKeys.js"
import * as JobEvents from "./JobEvents.js"
import * as JobHttp from "./JobHttp.js"
import * as JobRunner from "./JobRunner.js"
import * as Jobs from "./Jobs.js"
import * as ProviderProfiles from "./ProviderProfiles.js"
import * as SqlJobStore from "./SqlJobStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly profiles: ReadonlyArray<ProviderProfiles.ProfileConfig>
  readonly defaultProfile?: string | undefined
  readonly keys: ApiKeys.Keys
  readonly limits?: Partial<Jobs.Limits> | undefined
  readonly http?: JobHttp.Options | undefined
  /** How each profile's rate limiter is made (see `ProviderProfiles.Options`); default: this process's own. */
  readonly rateLimiter?: ProviderProfiles.Options["rateLimiter"]
}

/** How often the engine looks for due durable timers and resumed work (its default is 10 s). */
export const pollInterval = "1 second"

/**
 * The engine, the store and the runner: jobs without HTTP.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerJobs = (options: Options) => {
  const engine = ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(SingleRunner.layer({
      runnerStorage: "memory",
      // A stopping service does not wait long for running jobs: they resume when it starts again.
      shardingConfig: { entityMessagePollInterval: pollInterval, entityTerminationTimeout: "2 seconds" }
    }))
  )
  const base = Layer.mergeAll(
    JobEvents.layer.pipe(Layer.provideMerge(SqlJobStore.layer)),
    ProviderProfiles.layer(options.profiles, options.defaultProfile, { rateLimiter: options.rateLimiter })
  )
  const runner = JobRunner.layer.pipe(Layer.provideMerge(base), Layer.provideMerge(engine))
  const resume = Layer.effectDiscard(Effect.flatMap(JobRunner.JobRunner, (r) =>
    Effect.tap(Effect.orDie(r.resumeUnfinished), (n) => n > 0 ? Effect.logInfo(`looking after ${n} unfinished jobs`) : Effect.void)))
  return Jobs.layer({ maxItems: 100_000, ...options.limits }).pipe(
    Layer.provideMerge(resume),
    Layer.provideMerge(runner)
  )
}

/**
 * The service, served on the `HttpServer` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options) =>
  JobHttp.layerServer(options.http).pipe(
    Layer.provideMerge(layerJobs(options)),
    Layer.provide(ApiKeys.layer(options.keys))
  )
