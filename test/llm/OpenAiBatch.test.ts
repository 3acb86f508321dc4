/**
 * `OpenAiBatch` against the simulator's Batch API, over real HTTP on
 * loopback, with both on the `TestClock`: a batch's life (validating →
 * in_progress → finalizing → completed), what its lines say, expiry and
 * cancel with partial output, the enqueued-token limit failing after
 * creation, validation failures, finding a batch by its metadata, and an
 * output file id that is null for a moment.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, TestClock } from "effect"
import * as BatchProvider from "../../src/llm/BatchProvider.js"
import * as OpenAiBatch from "../../src/llm/OpenAiBatch.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import { byTag, untilEnded } from "../support/batchProviders.js"
import { runOnTestClock } from "../support/TestTime.js"

const noWait = { fileProcessingMs: 0 }

const withProvider = <A, E>(
  options: Simulator.Options,
  f: (provider: BatchProvider.Service, sim: Simulator.Service) => Effect.Effect<A, E, HttpClient.HttpClient>
) =>
  Effect.gen(function*() {
    const sim = yield* Simulator.Simulator
    const provider = yield* OpenAiBatch.make({ baseUrl: `${sim.url}/v1` })
    return yield* f(provider, sim)
  }).pipe(Effect.provide(Layer.mergeAll(SimulatorServer.layer(options), NodeHttpClient.layerUndici)))

const chatLine = (provider: BatchProvider.Service, customId: string, content: string, model = "sim-chat") =>
  provider.line(customId, "/v1/chat/completions", { model, messages: [{ role: "user", content }], max_tokens: 20 })

describe("OpenAiBatch against the simulator's Batch API", () => {
  it.effect("a batch runs validating → in_progress → finalizing → completed; each line answered as live, a flagged one a 400", () =>
    // No service time for the live call: it would sleep on the TestClock.
    withProvider({ latency: { baseMs: 0 }, batches: { ...noWait, validateMs: 2_000, linesPerSecond: 1, finalizeMs: 2_000 } }, (
      provider,
      sim
    ) =>
      Effect.gen(function*() {
        const lines = ["one", "two", "INVALID three", "four"].map((p, i) => chatLine(provider, `run_0_${i}`, p))
        const file = yield* provider.upload("shard.jsonl", lines)
        const id = yield* provider.create(file, "/v1/chat/completions", { run: "run", shard: "0" })
        const { seen, status } = yield* untilEnded(provider, id)
        expect(seen).toEqual(["validating", "in_progress", "finalizing", "completed"])
        expect(status).toMatchObject({ ended: "completed", counts: { total: 4, completed: 3, failed: 1 }, failures: [] })
        const outcomes = yield* provider.results(status)
        expect(byTag(outcomes)).toEqual({ Answered: ["run_0_0", "run_0_1", "run_0_3"], Permanent: ["run_0_2"] })
        const permanent = outcomes.find((o) => o._tag === "Permanent")
        expect(permanent).toMatchObject({ status: 400, message: expect.stringContaining("flagged") })
        // The same answer a live call gets for the same body.
        const live = (yield* HttpClient.HttpClient.pipe(
          Effect.flatMap((http) =>
            http.execute(HttpClientRequest.post(`${sim.url}/v1/chat/completions`).pipe(
              HttpClientRequest.bodyUnsafeJson({ model: "sim-chat", messages: [{ role: "user", content: "two" }], max_tokens: 20 })
            ))
          ),
          Effect.flatMap((r) => r.json),
          Effect.scoped,
          Effect.orDie
        )) as { choices: Array<{ message: { content: string } }>, usage: unknown }
        const answered = outcomes.find((o) => o._tag === "Answered" && o.customId === "run_0_1") as { body: typeof live }
        expect(answered.body.choices[0]!.message.content).toBe(live.choices[0]!.message.content)
        expect(answered.body.usage).toEqual(live.usage)
        const metrics = yield* sim.metrics
        expect(metrics.batches).toEqual({ uploads: 1, created: 1, linesBilled: 3, billedTwice: {} })
      })))

  it.effect("an upload waits until the file is processed (a batch created before that is refused with Cannot find file)", () =>
    withProvider({ batches: { fileProcessingMs: 1_200 } }, (provider, sim) =>
      Effect.gen(function*() {
        const early = yield* HttpClient.HttpClient.pipe(
          Effect.flatMap((http) =>
            Effect.gen(function*() {
              const form = new FormData()
              form.append("purpose", "batch")
              form.append("file", new Blob([chatLine(provider, "a_0_0", "x") + "\n"]), "early.jsonl")
              const encoded = new Request("http://localhost/", { method: "POST", body: form })
              const bytes = new Uint8Array(yield* Effect.promise(() => encoded.arrayBuffer()))
              return yield* http.execute(HttpClientRequest.post(`${sim.url}/v1/files`).pipe(
                HttpClientRequest.bodyUint8Array(bytes, encoded.headers.get("content-type")!)
              ))
            })
          ),
          Effect.flatMap((r) => r.json),
          Effect.flatMap((file) =>
            Effect.flatMap(HttpClient.HttpClient, (http) =>
              http.execute(HttpClientRequest.post(`${sim.url}/v1/batches`).pipe(HttpClientRequest.bodyUnsafeJson({
                input_file_id: (file as { id: string }).id,
                endpoint: "/v1/chat/completions",
                completion_window: "24h"
              })))
            )
          ),
          Effect.flatMap((r) => Effect.map(r.json, (body) => ({ status: r.status, body }))),
          Effect.scoped,
          Effect.orDie
        )
        expect(early.status).toBe(400)
        expect(JSON.stringify(early.body)).toContain("Cannot find file")
        const file = yield* runOnTestClock(provider.upload("late.jsonl", [chatLine(provider, "a_0_0", "x")]), "500 millis")
        yield* provider.create(file, "/v1/chat/completions", {})
        expect((yield* sim.metrics).batches.created).toBe(1)
      })))

  it.effect("a batch that runs out of its window expires: the lines that ran are answered, the rest come back as batch_expired", () =>
    withProvider({ batches: { ...noWait, validateMs: 0, linesPerSecond: 1, windowMs: 3_500 } }, (provider) =>
      Effect.gen(function*() {
        const lines = Array.from({ length: 6 }, (_, i) => chatLine(provider, `exp_0_${i}`, `prompt ${i}`))
        const id = yield* provider.create(yield* provider.upload("e.jsonl", lines), "/v1/chat/completions", {})
        const { status } = yield* untilEnded(provider, id)
        expect(status).toMatchObject({ ended: "expired", counts: { completed: 3, failed: 3 } })
        const outcomes = yield* provider.results(status)
        expect(byTag(outcomes)).toEqual({ Answered: ["exp_0_0", "exp_0_1", "exp_0_2"], Again: ["exp_0_3", "exp_0_4", "exp_0_5"] })
      })))

  it.effect("a cancelled batch is cancelling, then cancelled: the lines that ran are answered, the rest are cancelled", () =>
    withProvider({ batches: { ...noWait, validateMs: 0, linesPerSecond: 1, cancelMs: 3_000 } }, (provider) =>
      Effect.gen(function*() {
        const lines = Array.from({ length: 10 }, (_, i) => chatLine(provider, `c_0_${i}`, `prompt ${i}`))
        const id = yield* provider.create(yield* provider.upload("c.jsonl", lines), "/v1/chat/completions", {})
        yield* TestClock.adjust("2 seconds")
        yield* provider.cancel(id)
        const { seen, status } = yield* untilEnded(provider, id)
        expect(seen).toEqual(["cancelling", "cancelled"])
        const outcomes = yield* provider.results(status)
        expect(byTag(outcomes).Answered).toEqual(["c_0_0", "c_0_1"])
        expect(byTag(outcomes).Cancelled).toHaveLength(8)
        // Cancelling again, once it has ended, is no error.
        yield* provider.cancel(id)
      })))

  it.effect("over the model's enqueued-token limit a batch is created, then fails with token_limit_exceeded; another model is not held", () =>
    withProvider({ batches: { ...noWait, validateMs: 1_000, linesPerSecond: 1, enqueuedTokens: 100 } }, (provider) =>
      Effect.gen(function*() {
        const shard = (prefix: string, model: string) =>
          Array.from({ length: 4 }, (_, i) => chatLine(provider, `${prefix}_0_${i}`, "x".repeat(40), model))
        const first = yield* provider.create(yield* provider.upload("a.jsonl", shard("a", "sim-chat")), "/v1/chat/completions", {})
        const fileB = yield* provider.upload("b.jsonl", shard("b", "sim-chat"))
        const second = yield* provider.create(fileB, "/v1/chat/completions", {})
        const other = yield* provider.create(yield* provider.upload("c.jsonl", shard("c", "sim-other")), "/v1/chat/completions", {})
        expect((yield* provider.poll(second)).state).toBe("validating")
        const failed = yield* untilEnded(provider, second)
        expect(failed.status).toMatchObject({ ended: "failed", failures: [{ code: "token_limit_exceeded" }] })
        expect(failed.status.failures[0]!.message).toContain("Limit 100 enqueued tokens")
        expect((yield* untilEnded(provider, first)).status.ended).toBe("completed")
        expect((yield* untilEnded(provider, other)).status.ended).toBe("completed")
        // Once the first has ended, the same file goes through.
        const again = yield* provider.create(fileB, "/v1/chat/completions", {})
        expect((yield* untilEnded(provider, again)).status.ended).toBe("completed")
      })))

  it.effect("validation failures name their code and line: duplicate custom_id, model mismatch, bad JSON, url mismatch", () =>
    withProvider({ batches: { ...noWait, validateMs: 500 } }, (provider) =>
      Effect.gen(function*() {
        const failureOf = (lines: ReadonlyArray<string>) =>
          Effect.gen(function*() {
            const id = yield* provider.create(yield* provider.upload("v.jsonl", lines), "/v1/chat/completions", {})
            const { status } = yield* untilEnded(provider, id)
            expect(status.ended).toBe("failed")
            return status.failures[0]
          })
        const a = chatLine(provider, "v_0_0", "a")
        expect(yield* failureOf([a, chatLine(provider, "v_0_1", "b"), a])).toMatchObject({ code: "duplicate_custom_id", line: 3 })
        expect(yield* failureOf([a, chatLine(provider, "v_0_1", "b", "sim-other")])).toMatchObject({ code: "model_mismatch", line: 2 })
        expect(yield* failureOf([a, "{not json"])).toMatchObject({ code: "invalid_json_line", line: 2 })
        const embedding = provider.line("v_0_1", "/v1/embeddings", { model: "sim-chat", input: "x" })
        expect(yield* failureOf([a, embedding])).toMatchObject({ code: "url_mismatch", line: 2 })
      })))

  it.effect("find: the batch whose metadata holds every tag, created since the time given; none when no batch matches", () =>
    withProvider({ batches: noWait }, (provider) =>
      Effect.gen(function*() {
        const start = yield* TestClock.currentTimeMillis
        const ids: Array<string> = []
        for (let shard = 0; shard < 3; shard++) {
          const file = yield* provider.upload("f.jsonl", [chatLine(provider, `f_0_${shard}`, "x")])
          ids.push(yield* provider.create(file, "/v1/chat/completions", { effect_batch_run: "run-a", effect_batch_shard: `0/${shard}` }))
          yield* TestClock.adjust("1 minute")
        }
        const find = (tags: BatchProvider.Tags) =>
          provider.find({ tags, since: start, until: start + 600_000, requests: 1, exclude: new Set() })
        expect(yield* find({ effect_batch_run: "run-a", effect_batch_shard: "0/1" })).toEqual(Option.some(ids[1]))
        expect(yield* find({ effect_batch_run: "run-a", effect_batch_shard: "0/3" })).toEqual(Option.none())
        expect(yield* find({ effect_batch_run: "run-b", effect_batch_shard: "0/1" })).toEqual(Option.none())
      })))

  it.effect("a completed batch whose output file id is null for a moment is not read as ended until the id is there", () =>
    withProvider({ batches: { ...noWait, validateMs: 0, finalizeMs: 0, nullOutputPolls: 2 } }, (provider) =>
      Effect.gen(function*() {
        const id = yield* provider.create(yield* provider.upload("n.jsonl", [chatLine(provider, "n_0_0", "x")]), "/v1/chat/completions", {})
        yield* TestClock.adjust("1 second")
        const first = yield* provider.poll(id)
        const second = yield* provider.poll(id)
        const third = yield* provider.poll(id)
        expect([first, second, third].map((s) => [s.state, s.ended, s.results.output === null])).toEqual([
          ["completed", undefined, true],
          ["completed", undefined, true],
          ["completed", "completed", false]
        ])
        expect(byTag(yield* provider.results(third))).toEqual({ Answered: ["n_0_0"] })
      })))

  it.effect("a custom_id answered in two batches is billed twice, and the counters say so", () =>
    withProvider({ batches: { ...noWait, validateMs: 0 } }, (provider, sim) =>
      Effect.gen(function*() {
        for (let i = 0; i < 2; i++) {
          const id = yield* provider.create(yield* provider.upload("t.jsonl", [chatLine(provider, "t_0_0", "x")]), "/v1/chat/completions", {})
          yield* untilEnded(provider, id)
        }
        expect((yield* sim.metrics).batches).toEqual({ uploads: 2, created: 2, linesBilled: 2, billedTwice: { t_0_0: 2 } })
      })))
})
