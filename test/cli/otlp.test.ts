/**
 * `run --otlp URL`: the run's traces and metrics, as an OpenTelemetry
 * collector receives them over OTLP/HTTP JSON — read by a stand-in collector
 * on a loopback port (a real HTTP server that keeps each body it is posted).
 * One trace per run: the run's span, an item span per prompt under it, the
 * attempt spans under the items, the HTTP calls under the attempts.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Layer } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as RunCommand from "../../src/cli/RunCommand.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import { attribute, collector, metricsOf, spansOf } from "../support/otlpCollector.js"
import { recording } from "../support/recordingTracer.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-otlp-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)

/** A live run of 12 prompts against the simulator in context (key `k`), its traces to `otlp` if given. */
const liveRun = (name: string, otlp?: string) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    const input = join(dir, `${name}.jsonl`)
    writeFileSync(input, Array.from({ length: 12 }, (_, i) => JSON.stringify(`Say ${i}`)).join("\n"))
    return yield* RunCommand.run({
      input,
      out: join(dir, `${name}-out.jsonl`),
      baseUrl: `${simulator.url}/v1`,
      model: "sim-chat",
      apiKeyEnv: "SIM_KEY",
      progress: "none",
      concurrency: 4,
      ...(otlp === undefined ? {} : { otlp })
    }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["SIM_KEY", "k"]]))))
  })

describe("run --otlp", () => {
  it.scopedLive("one trace per run: run → item per prompt → attempts → HTTP calls; the batch's metrics under batch=cli and the model", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      const outcome = yield* liveRun("in", otel.url)
      expect(outcome.report.succeeded).toBe(12)

      // Sent when the run ends, before `run` returns.
      const spans = spansOf(otel)
      const named = (name: string) => spans.filter((s) => s.name === name)
      const [run] = named("effect-batch.run")
      expect(named("effect-batch.run")).toHaveLength(1)
      expect(attribute(run!, "effect-batch.model")).toBe("sim-chat")
      const items = named("effect-batch.item")
      const attempts = named("effect-batch.attempt")
      expect(items).toHaveLength(12)
      expect(attempts.length).toBe(outcome.report.attempts)
      expect(new Set(spans.map((s) => s.traceId))).toEqual(new Set([run!.traceId]))
      for (const item of items) expect(item.parentSpanId).toBe(run!.spanId)
      const itemIds = new Set(items.map((s) => s.spanId))
      for (const attempt of attempts) expect(itemIds.has(attempt.parentSpanId!)).toBe(true)
      // Where each item's time went rides on its span; a call takes time in flight.
      for (const item of items) expect(Number(attribute(item, "effect-batch.in_flight_ms"))).toBeGreaterThan(0)
      expect(new Set(items.map((s) => attribute(s, "effect-batch.index")))).toEqual(new Set(Array.from({ length: 12 }, (_, i) => i)))
      // The provider calls, under their attempts.
      const calls = spans.filter((s) => s.name.startsWith("http.client"))
      expect(calls.length).toBe(outcome.report.attempts)
      const attemptIds = new Set(attempts.map((s) => s.spanId))
      for (const call of calls) expect(attemptIds.has(call.parentSpanId!)).toBe(true)

      const metrics = metricsOf(otel)
      const itemsTotal = metrics.filter((m) => m.name === "effect_batch_items_total").at(-1)!
      const point = itemsTotal.sum!.dataPoints.find((p) =>
        attribute(p, "batch") === "cli" && attribute(p, "model") === "sim-chat" && attribute(p, "outcome") === "succeeded"
      )!
      expect(Number(point.asDouble ?? point.asInt)).toBe(12)
    }).pipe(
      Effect.provide(SimulatorServer.layer({ latency: { baseMs: 5 }, apiKey: "k" })),
      Effect.provide(platform)
    ))

  it.scopedLive("with --mode batch: the run's span, and a span per shard under it with its batch's events", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      const input = join(dir, "batch.jsonl")
      writeFileSync(input, Array.from({ length: 30 }, (_, i) => JSON.stringify(`Say ${i}`)).join("\n"))
      const outcome = yield* RunCommand.runInBatchMode({
        input,
        out: join(dir, "batch-out.jsonl"),
        simulate: true,
        mode: "batch",
        shardSize: 20,
        progress: "none",
        otlp: otel.url
      })
      expect(outcome.report).toMatchObject({ succeeded: 30, shards: 2 })
      const spans = spansOf(otel)
      const [run] = spans.filter((s) => s.name === "effect-batch.run")
      const shards = spans.filter((s) => s.name === "effect-batch.shard")
      expect([run === undefined, shards.length]).toEqual([false, 2])
      for (const shard of shards) expect(shard.parentSpanId).toBe(run!.spanId)
      expect(shards.map((s) => attribute(s, "effect-batch.lines")).sort()).toEqual([10, 20])
    }).pipe(Effect.provide(platform)))

  it.scopedLive("without --otlp: the run makes no spans (nothing would read them), in live and in batch mode", () =>
    Effect.gen(function*() {
      const { spans, tracer } = yield* recording
      const live = yield* Effect.withTracer(liveRun("untraced"), tracer)
      const batch = yield* RunCommand.runInBatchMode({
        input: join(dir, "untraced.jsonl"),
        out: join(dir, "untraced-batch-out.jsonl"),
        simulate: true,
        mode: "batch",
        shardSize: 5,
        progress: "none"
      }).pipe(Effect.withTracer(tracer))
      expect([live.report.succeeded, batch.report.succeeded]).toEqual([12, 12])
      expect(spans.map((span) => span.name)).toEqual([])
      // The same tracer, where tracing is on, records what is made.
      yield* Effect.withTracer(Effect.withSpan(Effect.void, "control"), tracer)
      expect(spans.map((span) => span.name)).toEqual(["control"])
    }).pipe(
      Effect.provide(SimulatorServer.layer({ latency: { baseMs: 5 }, apiKey: "k" })),
      Effect.provide(platform)
    ))

  it.effect("a URL that is not http(s): a usage error naming the flag and what it expected", () =>
    Effect.gen(function*() {
      const input = join(dir, "one.jsonl")
      writeFileSync(input, "\"hi\"\n")
      for (const [otlp, message] of [["ftp://127.0.0.1:4318", "expected an http or https URL"], ["not a url", "not a URL"]] as const) {
        const result = yield* Effect.either(RunCommand.run({ input, out: join(dir, "o.jsonl"), simulate: true, progress: "none", otlp }))
        expect(Either.getLeft(result).pipe((e) => e._tag === "Some" ? e.value.message : "")).toContain(`--otlp ${otlp}: `)
        expect(Either.getLeft(result).pipe((e) => e._tag === "Some" ? e.value.message : "")).toContain(message)
      }
    }).pipe(Effect.provide(platform)))
})
