/**
 * The job service in-process for API tests: on `NodeHttpServer.layerTest`
 * (a random port and an `HttpClient` pointed at it), SQLite in a temporary
 * file, and a simulator on its own port as the `sim` profile. The service
 * calls the provider with its own undici client, so the test's client stays
 * pointed at the service.
 */
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeContext, NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Context, Effect, Layer, Redacted, Schedule } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as ApiKeys from "../../src/service/ApiKeys.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as JobApi from "../../src/service/JobApi.js"
import * as JobRunner from "../../src/service/JobRunner.js"
import * as JobService from "../../src/service/JobService.js"
import * as Simulator from "../../src/llm/Simulator.js"

export const keyA = "tenant-a-key-0123456789"
export const keyB = "tenant-b-key-0123456789"

export interface Setup {
  readonly simulator?: Simulator.Options
  readonly concurrency?: number
  readonly maxItems?: number
  readonly maxBodyBytes?: number
  readonly publicMetrics?: boolean
  /** Files written to the input folder. */
  readonly files?: Readonly<Record<string, string>>
  /** Where jobs and the workflow journal live. Default: SQLite in a temporary file. */
  readonly sql?: Layer.Layer<SqlClient.SqlClient, unknown>
  /** Set while the service's layers are built, as `serve` sets its tracer (`OtlpExport.layerOrUntraced`). */
  readonly telemetry?: Layer.Layer<never>
}

export class Sim extends Context.Tag("test/Sim")<Sim, Simulator.Service>() {}

/** Every request the service sent the provider, in order: its URL and headers. */
export class ProviderRequests extends Context.Tag("test/ProviderRequests")<
  ProviderRequests,
  ReadonlyArray<{ readonly url: string, readonly headers: Readonly<Record<string, string>> }>
>() {}

/** The service's input folder (where `files` were written). */
export class InputDir extends Context.Tag("test/InputDir")<InputDir, string>() {}

/** The service, the simulator (`Sim`), its input folder (`InputDir`), and the test's `HttpClient` pointed at the service. */
export const layer = (setup: Setup = {}) => {
  const dir = mkdtempSync(join(tmpdir(), "effect-batch-service-"))
  for (const [name, text] of Object.entries(setup.files ?? {})) writeFileSync(join(dir, name), text)
  const simulator = Layer.effect(Sim, Simulator.Simulator).pipe(
    Layer.provideMerge(SimulatorServer.layer({ latency: { baseMs: 20, jitter: 0 }, ...setup.simulator }))
  )
  const sent: Array<{ readonly url: string, readonly headers: Readonly<Record<string, string>> }> = []
  const recordingClient = Layer.effect(
    HttpClient.HttpClient,
    Effect.map(
      HttpClient.HttpClient,
      HttpClient.tapRequest((request) => Effect.sync(() => sent.push({ url: request.url, headers: request.headers })))
    )
  ).pipe(Layer.provide(NodeHttpClient.layerUndici))
  const service = Layer.unwrapEffect(Effect.map(Sim, (sim) =>
    JobService.layer({
      profiles: [
        { name: "sim", baseUrl: `${sim.url}/v1`, models: ["sim-chat", "sim-other"], concurrency: setup.concurrency ?? 8 },
        { name: "second", baseUrl: `${sim.url}/v1`, models: ["sim-chat"], concurrency: 2 }
      ],
      keys: ApiKeys.make([
        { tenant: "a", key: Redacted.make(keyA) },
        { tenant: "b", key: Redacted.make(keyB) }
      ]),
      limits: { maxItems: setup.maxItems ?? 1000, inputDir: dir },
      http: { maxBodyBytes: setup.maxBodyBytes ?? 1024 * 1024, publicMetrics: setup.publicMetrics }
    }).pipe(
      Layer.provide(setup.sql ?? SqliteClient.layer({ filename: join(dir, "service.db") })),
      Layer.provide(recordingClient),
      Layer.provide(NodeContext.layer),
      // Batch-mode jobs read the simulator's batches often: they end in about a second.
      Layer.provide(Layer.succeed(JobRunner.BatchPoll, Schedule.spaced("200 millis"))),
      Layer.provide(setup.telemetry ?? Layer.empty)
    )))
  return service.pipe(
    Layer.provideMerge(simulator),
    Layer.provideMerge(NodeHttpServer.layerTest),
    Layer.merge(Layer.succeed(InputDir, dir)),
    Layer.merge(Layer.succeed(ProviderRequests, sent))
  )
}

/** The typed client, authenticated with `key`. */
export const client = (key: string) =>
  HttpApiClient.make(JobApi.Api, {
    transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(key))
  })

/** Polls the job until `done` holds (real time). */
export const waitFor = <A>(
  get: Effect.Effect<A, unknown>,
  done: (a: A) => boolean,
  what = "the condition"
): Effect.Effect<A> =>
  Effect.gen(function*() {
    for (let i = 0; i < 600; i++) {
      const value = yield* Effect.orDie(get)
      if (done(value)) return value
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })
