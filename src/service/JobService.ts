/**
 * The whole job service as layers, for one process or several.
 *
 * One process (the default, `cluster` not given): the `JobStore` and the
 * workflow engine on the `SqlClient` in context (`@effect/cluster`'s
 * `SingleRunner` with `ClusterWorkflowEngine`; jobs resumed when it starts
 * again), the runner, the provider profiles, and the HTTP API on the
 * `HttpServer` in context. `serve` gives it SQLite (or PostgreSQL) and a
 * port; tests give it `NodeHttpServer.layerTest`.
 *
 * Several processes (`cluster` given; PostgreSQL only): each process is one
 * `Role` — `api` (HTTP, SSE, dashboard; a client-only cluster member that
 * never runs an item), `runner` (a cluster runner: runs the workflows of
 * the shards it holds, no HTTP) or `all` (both). Shards move between
 * runners through Postgres advisory locks (`failover` gives the timings);
 * cancel and SSE events cross processes through `JobSignals` (LISTEN/NOTIFY).
 *
 * On start it looks after every job left queued or running: the engine
 * resumes executions it journaled by itself; a job stored but never started
 * (the process died in between) is started (executions are idempotent, so
 * several processes doing so at once start each once).
 *
 * What it does not promise: exactly-once calls (a runner killed mid-chunk
 * has its items in flight called again, with the same idempotency key);
 * limits shared across runners need `rateLimiter` and `concurrencyLimiter`
 * (e.g. Redis), or each runner applies them in full.
 *
 * @since 0.1.0
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as SingleRunner from "@effect/cluster/SingleRunner"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlCheckpointStore from "../sql/SqlCheckpointStore.js"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as ApiKeys from "./ApiKeys.js"
import * as JobEvents from "./JobEvents.js"
import * as JobHttp from "./JobHttp.js"
import * as JobRunner from "./JobRunner.js"
import * as JobSignals from "./JobSignals.js"
import * as Jobs from "./Jobs.js"
import * as ProviderProfiles from "./ProviderProfiles.js"
import * as SqlJobStore from "./SqlJobStore.js"

/**
 * A process's part in a service of several: `api` takes requests, `runner`
 * runs jobs, `all` does both.
 *
 * @since 0.1.0
 * @category models
 */
export type Role = "all" | "api" | "runner"

/**
 * @since 0.1.0
 * @category models
 */
export interface ClusterOptions {
  /** This process's part; default `all`. */
  readonly role?: Role | undefined
  /**
   * Where other runners reach this one (a runner's, or `all`'s, own socket
   * server). Unique per runner. Given explicitly, never read from `HOST` and
   * `PORT` as `@effect/cluster` would.
   */
  readonly runnerAddress?: { readonly host: string, readonly port: number } | undefined
  /** The address the runner's socket server binds, when it differs (e.g. `0.0.0.0`). */
  readonly listenAddress?: { readonly host: string, readonly port: number } | undefined
}

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
  /** How each profile's concurrency limiter is made (see `ProviderProfiles.Options`); default: this process's own. */
  readonly concurrencyLimiter?: ProviderProfiles.Options["concurrencyLimiter"]
  /** Take part in a service of several processes on PostgreSQL; without it, this process is the whole service. */
  readonly cluster?: ClusterOptions | undefined
}

/**
 * The service cannot be built as asked: a split role or a cluster on a
 * database that is not PostgreSQL, a runner without an address.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServiceConfigError extends Data.TaggedError("ServiceConfigError")<{ readonly message: string }> {}

/** How often the engine looks for due durable timers and resumed work (its default is 10 s). */
export const pollInterval = "1 second"

/** A stopping service does not wait long for running jobs: they resume when it starts again (or on another runner). */
const terminationTimeout = "2 seconds"

/**
 * How fast the cluster moves a dead runner's shards: a runner refreshes its
 * locks and heartbeat every `shardLockRefreshInterval`; one silent for
 * `shardLockExpiration` is taken for dead; every runner re-reads who is
 * alive every `refreshAssignmentsInterval` and polls for messages every
 * `entityMessagePollInterval`. A killed runner's jobs resume on the others
 * about `shardLockExpiration` + the other two later: ~8 s (the defaults,
 * 10 s / 35 s / 3 s / 10 s, give ~45 s). Every process of a service must
 * use the same.
 *
 * @since 0.1.0
 * @category constants
 */
export const failover = {
  shardLockRefreshInterval: Duration.seconds(2),
  shardLockExpiration: Duration.seconds(6),
  refreshAssignmentsInterval: Duration.seconds(1),
  entityMessagePollInterval: Duration.seconds(1)
} as const

/** The workflow engine for one process (any database), or for a cluster member (PostgreSQL). */
const engineLayer = (cluster: ClusterOptions | undefined) => {
  if (cluster === undefined) {
    return ClusterWorkflowEngine.layer.pipe(
      Layer.provideMerge(SingleRunner.layer({
        runnerStorage: "memory",
        shardingConfig: { entityMessagePollInterval: pollInterval, entityTerminationTimeout: terminationTimeout }
      }))
    )
  }
  const role = cluster.role ?? "all"
  const address = (a: { readonly host: string, readonly port: number } | undefined) =>
    a === undefined ? Option.none() : Option.some(RunnerAddress.make(a.host, a.port))
  return ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(NodeClusterSocket.layer({
      storage: "sql",
      clientOnly: role === "api",
      shardingConfig: {
        ...failover,
        runnerAddress: address(cluster.runnerAddress),
        runnerListenAddress: address(cluster.listenAddress),
        entityTerminationTimeout: terminationTimeout
      }
    })),
    Layer.orDie
  )
}

/** Fails unless the cluster asked for can be built on the `SqlClient` in context. */
const checkCluster = (cluster: ClusterOptions | undefined) =>
  Layer.effectDiscard(Effect.gen(function*() {
    if (cluster === undefined) return
    const role = cluster.role ?? "all"
    const sql = yield* SqlClient.SqlClient
    if (sql.onDialectOrElse({ pg: () => false, orElse: () => true })) {
      return yield* new ServiceConfigError({
        message: `the role ${role} runs the service on several processes, which share one PostgreSQL database; ` +
          "this database is not PostgreSQL (SQLite is for one process: use the role all without a cluster)"
      })
    }
    if (role !== "api" && cluster.runnerAddress === undefined) {
      return yield* new ServiceConfigError({ message: `the role ${role} runs jobs, and needs the address other runners reach it at (runnerAddress)` })
    }
  }))

/** The advisory lock (two-key form) processes of one cluster take turns on while they start. */
const startLockKey = [0x45424a53, 2] as const

/**
 * `layer`, built while holding a PostgreSQL advisory lock: processes of a
 * cluster starting together on a fresh database take turns at creating
 * their tables (`@effect/cluster`'s migrations race otherwise).
 */
const oneStartAtATime = <A, E, R>(layer: Layer.Layer<A, E, R>) =>
  Layer.scopedContext(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const outer = yield* Effect.scope
    return yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* Effect.orDie(sql.reserve)
      const [k1, k2] = startLockKey
      // Given back before the connection goes back to the pool, however the build ends.
      yield* Effect.acquireRelease(
        Effect.orDie(connection.executeRaw(`SELECT pg_advisory_lock(${k1}, ${k2})`, [])),
        () => Effect.ignore(connection.executeRaw(`SELECT pg_advisory_unlock(${k1}, ${k2})`, []))
      )
      return yield* Scope.extend(Layer.build(layer), outer)
    }))
  }))

/**
 * The engine, the store and the parts of the runner the role takes: jobs
 * without HTTP.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerJobs = (options: Options) => {
  const role = options.cluster?.role ?? "all"
  const signals = options.cluster === undefined ? JobSignals.layerLocal : JobSignals.layerPostgres
  const base = Layer.mergeAll(
    JobEvents.layer.pipe(Layer.provideMerge(SqlJobStore.layer)),
    ProviderProfiles.layer(options.profiles, options.defaultProfile, {
      rateLimiter: options.rateLimiter,
      concurrencyLimiter: options.concurrencyLimiter
    }),
    // Where batch-mode jobs keep their shards, beside the jobs: a runner that takes a job over re-attaches to its
    // batches, and any API process shows them.
    Layer.orDie(SqlCheckpointStore.layer({ prefix: "effect_batch_job_batches_" }))
  ).pipe(Layer.provideMerge(signals))
  // A runner keeps the control too: it starts the jobs left unfinished (`resumeUnfinished`).
  const parts = role === "api" ? JobRunner.layerControl : JobRunner.layer
  const runner = parts.pipe(Layer.provideMerge(base), Layer.provideMerge(engineLayer(options.cluster)))
  const resume = Layer.effectDiscard(Effect.flatMap(JobRunner.JobRunner, (r) =>
    Effect.tap(Effect.orDie(r.resumeUnfinished), (n) => n > 0 ? Effect.logInfo(`looking after ${n} unfinished jobs`) : Effect.void)))
  const jobs = Jobs.layer({ maxItems: 100_000, ...options.limits }).pipe(
    Layer.provideMerge(resume),
    Layer.provideMerge(runner)
  )
  return (options.cluster === undefined ? jobs : oneStartAtATime(jobs)).pipe(Layer.provide(checkCluster(options.cluster)))
}

/**
 * A runner's jobs (`layerJobs`) with `/metrics` alone on the `HttpServer` in
 * context (`JobHttp.layerMetricsServer`): the chunks a runner runs record
 * their metrics in its own registry, which no API process serves.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerJobsWithMetrics = (options: Options) =>
  JobHttp.layerMetricsServer(options.http).pipe(
    Layer.provideMerge(layerJobs(options)),
    Layer.provide(ApiKeys.layer(options.keys))
  )

/**
 * The service: the HTTP API on the `HttpServer` in context, unless the role
 * is `runner` (then jobs only).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options) =>
  (options.cluster?.role === "runner" ? layerJobs(options) : JobHttp.layerServer(options.http).pipe(
    Layer.provideMerge(layerJobs(options)),
    Layer.provide(ApiKeys.layer(options.keys))
  ))
