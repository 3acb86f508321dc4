/**
 * `effect-batch serve`: the job service (`JobService`) on a port, with the
 * embedded defaults — jobs and the workflow engine's journal in one SQLite
 * file, and, without `--profiles`, the simulator as the only provider
 * profile (`simulator`, model `sim-chat`), started in the same process.
 *
 * API keys come from `EFFECT_BATCH_API_KEYS` (`tenant=key,...`). Without it,
 * a random key is made for the tenant `default` and printed, for trying the
 * service out; it changes at every start.
 *
 * Ctrl-C (or SIGTERM) closes the service once the chunks running finish; a
 * second one exits at once. Either way every job resumes at the next start.
 *
 * Several processes: `--db postgres://…` makes the process a member of a
 * cluster on that database, in the part `--role` names — `all` (the
 * default), `api` (HTTP, SSE, dashboard; runs nothing) or `runner` (runs
 * jobs; no API, and `/metrics` alone with `--metrics-port`, its chunks'
 * metrics being its own). A process that runs jobs listens for the other runners on
 * `--runner-host`:`--runner-port`, which must be unique per process. Split
 * roles need `--profiles` (every process reads the same) and PostgreSQL.
 *
 * With `--redis URL`, every profile's rate limits and cooldown gate
 * (`RedisRateLimiter`) and its limit on the calls in flight
 * (`RedisConcurrencyLimiter`) live in Redis, named `profile.<name>`, so
 * several processes on one provider keep to its limits together (and to the
 * pace learned from 429s, for a profile that tells no request limit).
 *
 * What it does not promise: TLS (put a reverse proxy in front).
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import * as ApiKeys from "../service/ApiKeys.js"
import type * as JobService from "../service/JobService.js"
import type * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import type * as RateLimiter from "../RateLimiter.js"
import * as ProviderProfiles from "../service/ProviderProfiles.js"
import * as Simulator from "../llm/Simulator.js"
import { UsageError } from "./CliError.js"
import * as SimulateCommand from "./SimulateCommand.js"
import * as StopSignal from "./StopSignal.js"
import * as OtlpExport from "./OtlpExport.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions {
  readonly port: number
  readonly host: string
  readonly db: string
  readonly profiles: string | undefined
  readonly inputDir: string | undefined
  readonly maxItems: number
  /** Redis URL: share every profile's rate limits through it. */
  readonly redis?: string | undefined
  /** This process's part; split roles need PostgreSQL. Default `all`. */
  readonly role?: JobService.Role | undefined
  /** Where other runners reach this one (a PostgreSQL service's processes that run jobs). */
  readonly runnerHost?: string | undefined
  readonly runnerPort?: number | undefined
  /** Serve `/metrics` without an API key. */
  readonly publicMetrics?: boolean | undefined
  /** A runner's: serve `/metrics` alone on this port (of `host`; 0: any free one). */
  readonly metricsPort?: number | undefined
  /** An OpenTelemetry collector's OTLP/HTTP base URL: the service's spans and metrics go there (`OtlpExport`). */
  readonly otlp?: string | undefined
}

/** An HTTP server on `port` of `host` (0: any free port). */
const listenOn = (host: string, port: number) => NodeHttpServer.layer(() => createServer(), { port, host })

/** Where a server asked for `port` of `host` listens, as a URL to reach it by (`0.0.0.0`: this machine's loopback). */
const urlOf = (server: HttpServer.HttpServer, host: string, port: number) => {
  const listening = server.address._tag === "TcpAddress" ? server.address.port : port
  return `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${listening}`
}

/** Whether `--db` names a PostgreSQL database rather than a SQLite file. */
const isPostgres = (db: string) => /^postgres(?:ql)?:\/\//.test(db)

const usage = (message: string) => new UsageError({ message })
const reason = (cause: Cause.Cause<unknown>) => Cause.pretty(cause).split("\n")[0]!

/** A port a process listens on, and the flag that gives it. */
interface Listening {
  readonly flag: string
  readonly host: string
  readonly port: number
}

/**
 * Why a process could not start: a port it could not listen on is named with its flag — the HTTP server's
 * (`ServeError`) or the cluster's runner socket (`SocketServerError`), each carrying Node's `listen` error as
 * its cause; anything else follows `what`.
 */
const startFailure = (what: string, listening: { readonly http?: Listening | undefined, readonly runner?: Listening | undefined }) =>
  (cause: Cause.Cause<unknown>) => {
    // The cluster's socket server dies with its error (a defect), the HTTP server fails with its own.
    for (const error of [...Cause.failures(cause), ...Cause.defects(cause)]) {
      const where = Predicate.isTagged(error, "ServeError") ? listening.http : Predicate.isTagged(error, "SocketServerError") ? listening.runner : undefined
      if (where === undefined) continue
      const listenError = Predicate.hasProperty(error, "cause") ? error.cause : undefined
      return Effect.fail(usage(
        `cannot listen on ${where.host}:${where.port} (${where.flag}): ` +
          (listenError instanceof Error ? listenError.message : "the port could not be opened")
      ))
    }
    return Effect.fail(usage(`${what}: ${reason(cause)}`))
  }

const keysOf = Effect.gen(function*() {
  const configured = yield* Config.option(Config.string("EFFECT_BATCH_API_KEYS")).pipe(Effect.orElseSucceed(() => Option.none()))
  if (Option.isSome(configured)) {
    const parsed = ApiKeys.parse(configured.value)
    if (Either.isLeft(parsed)) return yield* Effect.fail(usage(`EFFECT_BATCH_API_KEYS: ${parsed.left}`))
    return { keys: parsed.right, generated: undefined }
  }
  const key = `eb_${randomBytes(24).toString("base64url")}`
  return { keys: ApiKeys.make([{ tenant: "default", key: Redacted.make(key) }]), generated: key }
})

const profilesOf = (file: string | undefined) =>
  Effect.gen(function*() {
    if (file === undefined) {
      const simulator = Context.get(yield* Layer.build(SimulateCommand.layer(SimulateCommand.demo)), Simulator.Simulator)
      return {
        profiles: [{ name: "simulator", baseUrl: `${simulator.url}/v1`, models: ["sim-chat"], maxConcurrency: 64 }],
        defaultProfile: "simulator",
        note: `simulator at ${simulator.url}/v1`
      }
    }
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(Effect.mapError((e) => usage(`--profiles ${file}: ${e.message}`)))
    const parsed = yield* ProviderProfiles.parse(text, process.env).pipe(Effect.mapError((e) => usage(`--profiles ${file}: ${e.message}`)))
    return { ...parsed, note: `profiles ${parsed.profiles.map((p) => p.name).join(", ")} from ${file}` }
  })

/**
 * The packages the job service needs beyond the CLI's, as the line that
 * installs them.
 *
 * @since 0.1.0
 * @category constants
 */
export const servicePackages = "npm i @effect/cluster@^0.60.2 @effect/workflow@^0.19.1 @effect/rpc@^0.76.2 @effect/sql@^0.52.1 " +
  "@effect/experimental@^0.61.1"

// Loaded when serving, not with the CLI: `run` works without the service's packages (optional peers).
const loadService: Effect.Effect<typeof JobService, UsageError> = Effect.tryPromise({
  try: () => import("../service/JobService.js"),
  catch: (error) => {
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec(error instanceof Error ? error.message : String(error))?.[1]
    return usage(`serve needs ${missing === undefined ? "the job service's packages" : `the package ${missing}`}, which is not installed: ${servicePackages}`)
  }
})

/** `@effect/sql-pg`, loaded only for a PostgreSQL `--db` (an optional peer). */
const loadPg = Effect.tryPromise({
  try: () => import("@effect/sql-pg/PgClient"),
  catch: () => usage("--db postgres://… needs the package @effect/sql-pg, which is not installed: npm i @effect/sql-pg@^0.53.0")
})

/** A database or Redis URL as printed: its password (`redis://:secret@host`) masked. */
const shown = (url: string) => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return url.replace(/\/\/[^@/]*@/, "//***@")
  }
}

/** `effect-batch/redis`, loaded only with `--redis` (its `ioredis` is an optional peer). */
const loadRedis = Effect.tryPromise({
  try: () => Promise.all([import("ioredis"), import("../redis/RedisRateLimiter.js"), import("../redis/RedisConcurrencyLimiter.js")]),
  catch: () => usage("--redis needs the package ioredis, which is not installed: npm i ioredis@^5.9.3")
})

/**
 * Each profile's rate and concurrency limiters shared through Redis at `url` (held until the scope closes), or a
 * usage error naming a Redis that does not answer.
 */
const sharedLimits = (url: string) =>
  Effect.gen(function*() {
    const [{ Redis }, RedisRateLimiter, RedisConcurrencyLimiter] = yield* loadRedis
    const redis = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3 })
        // Failures surface through the connect below, then through the commands (a defect naming the limiter).
        client.on("error", () => undefined)
        return client
      }),
      (client) => Effect.promise(() => client.quit().catch(() => "closed"))
    )
    yield* Effect.tryPromise({
      try: () => redis.connect().then(() => redis.ping()),
      catch: (error) => usage(`--redis ${shown(url)}: cannot reach Redis: ${error instanceof Error ? error.message : String(error)}`)
    })
    const scope = yield* Effect.scope
    return {
      rateLimiter: (config: ProviderProfiles.ProfileConfig, limits: RateLimiter.Limits) =>
        RedisRateLimiter.make({ redis, name: `profile.${config.name}`, limits }),
      concurrencyLimiter: (config: ProviderProfiles.ProfileConfig, local: ConcurrencyLimiter.Limiter, limit: number) =>
        Scope.extend(RedisConcurrencyLimiter.make({ redis, name: `profile.${config.name}`, limit, local }), scope)
    }
  })

/**
 * Serves until stopped (Ctrl-C).
 *
 * @since 0.1.0
 * @category running
 */
export const serve = (options: ServeOptions) =>
  Effect.scoped(Effect.gen(function*() {
    const role = options.role ?? "all"
    const postgres = isPostgres(options.db)
    if (role !== "all" && !postgres) {
      return yield* Effect.fail(usage(
        `--role ${role} splits the service over several processes, which share a PostgreSQL database: ` +
          "give --db postgres://… (a SQLite file is for one process, the role all)"
      ))
    }
    if (role !== "all" && options.profiles === undefined) {
      return yield* Effect.fail(usage(
        `--role ${role} needs --profiles: every process of the service reads the same profiles (start one provider or ` +
          "`effect-batch simulate`, and name it in a profiles file)"
      ))
    }
    if (options.metricsPort !== undefined && role !== "runner") {
      return yield* Effect.fail(usage(
        `--metrics-port is for --role runner, which serves no API: this process (role ${role}) serves /metrics on --port`
      ))
    }
    if (postgres && role !== "api" && options.runnerHost === undefined && (options.host === "0.0.0.0" || options.host === "::")) {
      return yield* Effect.fail(usage(
        `--host ${options.host} binds every interface, which other runners cannot dial: give --runner-host, ` +
          "the address they reach this process at"
      ))
    }
    const telemetry = yield* OtlpExport.layerOrUntraced(options.otlp, `effect-batch-${role}`)
    const { generated, keys } = yield* keysOf
    const { defaultProfile, note, profiles } = yield* profilesOf(options.profiles)
    const { layer, layerJobs, layerJobsWithMetrics } = yield* loadService
    // The API role calls no provider: its profiles' limiters stay idle, and need no leases renewed in Redis.
    const shared = options.redis === undefined || role === "api" ? undefined : yield* sharedLimits(options.redis)
    const runnerAddress = { host: options.runnerHost ?? options.host, port: options.runnerPort ?? 34431 }
    const database: Layer.Layer<SqlClient.SqlClient, unknown> = postgres
      ? (yield* loadPg).layer({ url: Redacted.make(options.db) })
      : SqliteClient.layer({ filename: options.db })
    const serviceOptions: JobService.Options = {
      profiles,
      defaultProfile,
      keys,
      limits: { maxItems: options.maxItems, inputDir: options.inputDir },
      http: { publicMetrics: options.publicMetrics },
      rateLimiter: shared?.rateLimiter,
      concurrencyLimiter: shared?.concurrencyLimiter,
      cluster: postgres ? { role, ...(role === "api" ? {} : { runnerAddress }) } : undefined
    }
    const where = postgres ? shown(options.db) : options.db
    const storage = `${where}; ${note}`
    if (role === "runner") {
      const metricsPort = options.metricsPort
      const jobs = metricsPort === undefined
        ? layerJobs(serviceOptions)
        : layerJobsWithMetrics(serviceOptions).pipe(Layer.provideMerge(listenOn(options.host, metricsPort)))
      const built = yield* Layer.build(jobs.pipe(Layer.provide(database), Layer.provide(telemetry))).pipe(
        Effect.catchAllCause(startFailure(`cannot start the runner on ${where}`, {
          http: metricsPort === undefined ? undefined : { flag: "--metrics-port", host: options.host, port: metricsPort },
          runner: { flag: "--runner-port", ...runnerAddress }
        }))
      )
      yield* Console.log(`effect-batch runner on ${runnerAddress.host}:${runnerAddress.port}`)
      yield* Console.log(`  storage    ${storage}`)
      if (metricsPort !== undefined) {
        const url = urlOf(Context.unsafeGet(built, HttpServer.HttpServer), options.host, metricsPort)
        yield* Console.log(`  metrics    ${url}/metrics   (Prometheus text; ${options.publicMetrics === true ? "public" : "needs an API key"})`)
        if (generated !== undefined && options.publicMetrics !== true) {
          yield* Console.log(`  API key    ${generated}   (for /metrics; made for this start — set EFFECT_BATCH_API_KEYS to keep keys)`)
        }
      }
    } else {
      const httpServer = listenOn(options.host, options.port)
      // The exporters' tracer (or none, untraced), set while the service's layers are built, is the one every fiber
      // they fork keeps.
      const service = layer(serviceOptions).pipe(Layer.provide(database), Layer.provide(telemetry))
      const built = yield* Layer.build(service.pipe(Layer.provideMerge(httpServer))).pipe(
        Effect.catchAllCause(startFailure(`cannot start the service on ${where}`, {
          http: { flag: "--port", host: options.host, port: options.port },
          runner: postgres && role === "all" ? { flag: "--runner-port", ...runnerAddress } : undefined
        }))
      )
      const url = urlOf(Context.get(built, HttpServer.HttpServer), options.host, options.port)
      yield* Console.log(`effect-batch job service on ${url}`)
      yield* Console.log(`  dashboard  ${url}/${generated === undefined ? "" : `#key=${generated}`}`)
      yield* Console.log(`  API        ${url}/jobs   (reference: ${url}/reference, OpenAPI: ${url}/openapi.json)`)
      yield* Console.log(`  metrics    ${url}/metrics   (Prometheus text; ${options.publicMetrics === true ? "public" : "needs an API key"})`)
      yield* Console.log(`  storage    ${storage}`)
      if (postgres) {
        yield* Console.log(`  role       ${role}${role === "api" ? "" : `; runner on ${runnerAddress.host}:${runnerAddress.port}`}`)
      }
      if (generated !== undefined) {
        yield* Console.log(`  API key    ${generated}   (tenant "default"; made for this start — set EFFECT_BATCH_API_KEYS to keep keys)`)
      }
    }
    if (shared !== undefined) {
      yield* Console.log(`  limits     rate and concurrency shared through Redis at ${shown(options.redis!)}`)
    }
    if (options.otlp !== undefined) yield* Console.log(`  telemetry  traces and metrics to ${shown(options.otlp)} (OTLP/HTTP)`)
    // First stop request: close, letting the chunks running now finish (they are not interruptible);
    // second: leave at once — every job is durable and resumes at the next start.
    const stop = yield* StopSignal.current
    yield* stop.graceful
    yield* Console.log("stopping: running chunks finish first; stop again to exit now (jobs resume at the next start)")
    yield* Effect.forkDaemon(Effect.zipRight(stop.now, Effect.sync(() => process.exit(130))))
    return yield* Effect.interrupt
  }))

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "serve",
  {
    port: Options.integer("port").pipe(Options.withDefault(8080), Options.withDescription("Port to listen on.")),
    host: Options.text("host").pipe(Options.withDefault("127.0.0.1"), Options.withDescription("Address to listen on.")),
    db: Options.text("db").pipe(
      Options.withDefault("effect-batch-service.db"),
      Options.withDescription("SQLite file for jobs and the workflow journal, or a postgres:// URL (several processes).")
    ),
    role: Options.choice("role", ["all", "api", "runner"]).pipe(
      Options.withDefault("all" as const),
      Options.withDescription("This process's part (PostgreSQL): all, api (HTTP only, runs nothing) or runner (runs jobs; no API, /metrics alone with --metrics-port).")
    ),
    runnerHost: Options.text("runner-host").pipe(
      Options.optional,
      Options.withDescription("Address other runners reach this one at (default: --host). PostgreSQL only.")
    ),
    runnerPort: Options.integer("runner-port").pipe(
      Options.optional,
      Options.withDescription("Port this runner listens on for the others (default 34431; unique per process on a machine).")
    ),
    profiles: Options.file("profiles").pipe(
      Options.optional,
      Options.withDescription("JSON file of provider profiles (default: the built-in simulator).")
    ),
    inputDir: Options.directory("input-dir").pipe(
      Options.optional,
      Options.withDescription("Folder of JSONL files jobs may name with `file`.")
    ),
    maxItems: Options.integer("max-items").pipe(Options.withDefault(100_000), Options.withDescription("Items per job at most.")),
    otlp: Options.text("otlp").pipe(
      Options.withPseudoName("URL"),
      Options.withDescription(
        "Send the service's traces (a span per request and per job chunk) and metrics to an OpenTelemetry collector " +
          "over OTLP/HTTP, e.g. http://127.0.0.1:4318 (needs the package @effect/opentelemetry)."
      ),
      Options.optional
    ),
    publicMetrics: Options.boolean("public-metrics").pipe(
      Options.withDescription("Serve /metrics (Prometheus text) without an API key, for a scraper inside a trusted network.")
    ),
    metricsPort: Options.integer("metrics-port").pipe(
      Options.optional,
      Options.withDescription(
        "A runner's (--role runner): serve /metrics (Prometheus text of the chunks it runs) on this port of --host; " +
          "0 picks a free one. The other roles serve it on --port."
      )
    ),
    redis: Options.text("redis").pipe(
      Options.optional,
      Options.withDescription("Redis URL: share every profile's rate limits, cooldown gate and concurrency limit with other processes through it.")
    )
  },
  (flags) =>
    serve({
      port: flags.port,
      host: flags.host,
      db: flags.db,
      profiles: Option.getOrUndefined(flags.profiles),
      inputDir: Option.getOrUndefined(flags.inputDir),
      maxItems: flags.maxItems,
      redis: Option.getOrUndefined(flags.redis),
      role: flags.role,
      runnerHost: Option.getOrUndefined(flags.runnerHost),
      runnerPort: Option.getOrUndefined(flags.runnerPort),
      publicMetrics: flags.publicMetrics,
      metricsPort: Option.getOrUndefined(flags.metricsPort),
      otlp: Option.getOrUndefined(flags.otlp)
    })
).pipe(Command.withDescription("Serve the job service (HTTP API, SSE, dashboard) until stopped."))
