/**
 * `serve --otlp URL`, as a real process: the service's spans (one per HTTP
 * request, one per job chunk, the provider calls under the chunks) and its
 * metrics reach a stand-in collector on loopback while it runs. Without it,
 * the service makes no spans.
 */
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as JobApi from "../../src/service/JobApi.js"
import * as JobWorkflow from "../../src/service/JobWorkflow.js"
import { attribute, collector, metricsOf, spansOf } from "../support/otlpCollector.js"
import * as OtlpExport from "../../src/cli/OtlpExport.js"
import * as JobServiceTest from "../support/JobServiceTest.js"
import { waitFor } from "../support/JobServiceTest.js"
import { recording } from "../support/recordingTracer.js"
import * as ServiceProcess from "../support/serviceProcess.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-serve-otlp-"))
afterAll(() => {
  ServiceProcess.killAll()
  rmSync(dir, { recursive: true, force: true })
})

const key = "otlp-test-key-0123456789"

describe("serve --otlp", () => {
  it.live("a job's requests and chunks are spans at the collector, its batch metrics under batch=job", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      const simulator = yield* Simulator.Simulator
      const profiles = join(dir, "profiles.json")
      writeFileSync(profiles, JSON.stringify({ profiles: [{ name: "sim", baseUrl: `${simulator.url}/v1`, models: ["sim-chat"], concurrency: 8 }] }))
      const service = yield* ServiceProcess.start({
        db: join(dir, "service.db"),
        profiles,
        env: { EFFECT_BATCH_API_KEYS: `t=${key}` },
        args: ["--otlp", otel.url]
      })
      // Printed after the URL, sometimes in a later chunk of output.
      yield* waitFor(Effect.sync(service.output), (output) => output.includes(`telemetry  traces and metrics to ${otel.url}/ (OTLP/HTTP)`))
      const api = yield* HttpApiClient.make(JobApi.Api, {
        baseUrl: service.url,
        transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(key))
      })
      // Two chunks, the second of 50 items.
      const n = JobWorkflow.chunkSize + 50
      const job = yield* api.jobs.submit({ payload: { items: Array.from({ length: n }, (_, i) => `otlp ${i}`) }, headers: {} })
      yield* Effect.repeat(api.jobs.get({ path: { id: job.id } }), {
        schedule: Schedule.spaced("100 millis"),
        until: (j) => j.state === "finished"
      })
      // The exporters send every few seconds while the process runs.
      const chunksOf = () => spansOf(otel).filter((s) => s.name === "effect-batch.job.chunk" && attribute(s, "effect-batch.job") === job.id)
      yield* Effect.repeat(Effect.sync(chunksOf), { schedule: Schedule.spaced("200 millis"), until: (chunks) => chunks.length >= 2 })
      const chunks = chunksOf()
      expect(chunks.map((s) => attribute(s, "effect-batch.chunk")).sort()).toEqual([0, 1])
      expect(chunks.every((s) => attribute(s, "effect-batch.chunk_outcome") === "done")).toBe(true)
      const spans = spansOf(otel)
      expect(spans.some((s) => s.name === "http.server POST")).toBe(true)
      // The provider calls, under the chunks that made them.
      const chunkIds = new Set(chunks.map((s) => s.spanId))
      const calls = spans.filter((s) => s.name.startsWith("http.client") && chunkIds.has(s.parentSpanId!))
      expect(calls.length).toBeGreaterThanOrEqual(n)

      const itemsTotal = () =>
        metricsOf(otel).filter((m) => m.name === "effect_batch_items_total").flatMap((m) => m.sum?.dataPoints ?? [])
          .filter((p) => attribute(p, "batch") === "job" && attribute(p, "profile") === "sim" && attribute(p, "outcome") === "succeeded")
          .map((p) => Number(p.asDouble ?? p.asInt))
      yield* Effect.repeat(Effect.sync(itemsTotal), { schedule: Schedule.spaced("200 millis"), until: (values) => values.includes(n) })
      expect(Math.max(...itemsTotal())).toBe(n)
    }).pipe(
      Effect.provide(Layer.mergeAll(SimulatorServer.layer({ latency: { baseMs: 5 } }), NodeHttpClient.layerUndici)),
      Effect.scoped
    ), 120_000)
})

describe("serve without --otlp", () => {
  it.live("the service makes no spans: none for its requests, chunks, provider calls or statements", () =>
    Effect.gen(function*() {
      /** The names of the spans a job of 30 items made, under `telemetry`, set as `serve` sets it. */
      const spansOfAJob = (telemetry: Layer.Layer<never>) =>
        Effect.gen(function*() {
          const { spans, tracer } = yield* recording
          yield* Effect.gen(function*() {
            const api = yield* JobServiceTest.client(JobServiceTest.keyA)
            const job = yield* api.jobs.submit({ payload: { items: Array.from({ length: 30 }, (_, i) => `untraced ${i}`) }, headers: {} })
            yield* waitFor(api.jobs.get({ path: { id: job.id } }), (j) => j.state === "finished")
          }).pipe(Effect.provide(JobServiceTest.layer({ telemetry: Layer.merge(Layer.setTracer(tracer), telemetry) })))
          return new Set(spans.map((span) => span.name))
        })
      // The control: the recording tracer sees the service's spans where tracing is on.
      const traced = yield* spansOfAJob(Layer.empty)
      expect(["effect-batch.job.chunk", "http.server POST", "sql.execute"].filter((name) => !traced.has(name))).toEqual([])
      expect(Array.from(traced).some((name) => name.startsWith("http.client"))).toBe(true)
      expect(Array.from(yield* spansOfAJob(OtlpExport.untraced))).toEqual([])
    }), 60_000)
})
