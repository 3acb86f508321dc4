/**
 * `run` end to end, in-process: a real simulator on a loopback port, temp
 * input and output files, the Node file system and HTTP client.
 */
import type { HttpClient } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Exit, Fiber, Layer } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import type * as ResultsWriter from "../../src/cli/ResultsWriter.js"
import * as RunCommand from "../../src/cli/RunCommand.js"
import * as StopSignal from "../../src/cli/StopSignal.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-run-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
const inputFile = (text: string) => {
  const path = join(dir, `in-${++files}.jsonl`)
  writeFileSync(path, text)
  return path
}
const outputFile = () => join(dir, `out-${++files}.jsonl`)

const readResults = (path: string): Array<ResultsWriter.OutputRecord> =>
  readFileSync(path, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as ResultsWriter.OutputRecord)
    .sort((a, b) => a.index - b.index)

const apiKey = "sim-key"

/** A fast, exact simulator that wants `apiKey`, and the key in `SIM_KEY`. */
const withSimulator = <A, E>(
  options: Simulator.Options,
  f: (simulator: Simulator.Service) => Effect.Effect<A, E, NodeContext.NodeContext | HttpClient.HttpClient>
) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(Layer.mergeAll(
      SimulatorServer.layer({ latency: { baseMs: 5 }, apiKey, ...options }),
      NodeContext.layer,
      NodeHttpClient.layerUndici
    )),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["SIM_KEY", apiKey]])))
  )

const options = (simulator: Simulator.Service, input: string, out: string): RunCommand.RunOptions => ({
  input,
  out,
  baseUrl: `${simulator.url}/v1`,
  model: "sim-chat",
  apiKeyEnv: "SIM_KEY",
  progress: "none"
})

const mixed = [
  "\"Say hello\"",
  "",
  "{\"id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"Translate: cat\"}],\"max_tokens\":16}",
  "{\"id\": \"broken\", \"messages\": [",
  "\"This prompt is INVALID\"",
  "{\"id\":\"b\",\"messages\":[{\"role\":\"user\"}]}",
  "   ",
  "\"Count to three\"",
  "{\"id\":42,\"messages\":[{\"role\":\"system\",\"content\":\"Be brief\"},{\"role\":\"user\",\"content\":\"Name a color\"}]}"
].join("\r\n")

const prompts = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify(`Write a haiku about the number ${i}`)).join("\n") + "\n"

describe("RunCommand.run", () => {
  it.live("one result line per input line: successes, rejected lines (no call) and a provider 400 (one attempt)", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(mixed)
        const out = outputFile()
        const outcome = yield* RunCommand.run({ ...options(simulator, input, out), concurrency: 4 })
        const results = readResults(out)

        expect(results.map((r) => [r.index, r.line, r.status])).toEqual([
          [0, 1, "succeeded"],
          [1, 3, "succeeded"],
          [2, 4, "failed"],
          [3, 5, "failed"],
          [4, 6, "failed"],
          [5, 8, "succeeded"],
          [6, 9, "succeeded"]
        ])
        expect(results.map((r) => r.id)).toEqual([undefined, "a", undefined, undefined, "b", undefined, 42])
        for (const r of results.filter((r) => r.status === "succeeded")) {
          expect(r).toMatchObject({ attempts: 1, source: "call" })
          expect(r.output!.length).toBeGreaterThan(0)
          expect(r.tokens!.prompt).toBeGreaterThan(0)
          expect(r.tokens!.completion).toBeGreaterThan(0)
          expect(r.cost).toBeGreaterThan(0)
        }
        expect(results[1]!.tokens!.completion).toBeLessThanOrEqual(16)
        expect(results[2]).toMatchObject({ attempts: 0, cost: 0, error: { tag: "Permanent" } })
        expect(results[2]!.error!.message).toMatch(new RegExp(`^${escape(input)}:4: invalid JSON`))
        expect(results[4]).toMatchObject({
          attempts: 0,
          error: { tag: "Permanent", message: `${input}:6: messages[0].content is missing` }
        })
        expect(results[3]).toMatchObject({ attempts: 1, error: { tag: "Permanent", status: 400, code: "invalid_prompt" } })

        // The rejected lines never reached the provider; the INVALID prompt did, once.
        const metrics = yield* simulator.metrics
        expect(metrics.received).toBe(5)
        expect(metrics.byStatus).toEqual({ 200: 4, 400: 1 })
        expect(outcome.report).toMatchObject({ total: 7, succeeded: 4, failed: 3, skipped: 0, attempts: 5 })
        expect(outcome.report.failures.Permanent).toBe(3)
        expect(outcome).toMatchObject({ written: 7, rejected: 2, out })
        expect(outcome.report.cost.actual).toBeCloseTo(results.reduce((sum, r) => sum + r.cost, 0), 12)
      })))

  it.live("rejected lines are shown above the progress (the first 10), and all of them are in the results", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const writes: Array<string> = []
        const output = { isTTY: false, columns: () => undefined, write: (text: string) => void writes.push(text) }
        const input = inputFile(["\"fine\"", ...Array.from({ length: 14 }, (_, i) => `{bad ${i}`)].join("\n"))
        const out = outputFile()
        yield* RunCommand.run({ ...options(simulator, input, out), progress: "plain", progressOutput: output })
        const notes = writes.filter((text) => !text.startsWith("progress"))
        expect(notes.length).toBe(11)
        expect(notes[0]).toMatch(new RegExp(`^${escape(input)}:2: invalid JSON`))
        expect(notes[9]).toMatch(new RegExp(`^${escape(input)}:11: invalid JSON`))
        expect(notes[10]).toBe(`(further rejected lines are only in ${out})\n`)
        expect(readResults(out).filter((r) => r.status === "failed").length).toBe(14)
      })))

  it.live("--cache: a second run over the same file answers every item from the cache, with no request", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(prompts(12))
        const cache = join(dir, "cache.db")
        const firstOut = outputFile()
        const first = yield* RunCommand.run({ ...options(simulator, input, firstOut), cache })
        expect(first.report.sources.call).toBe(12)
        const calls = (yield* simulator.metrics).received
        expect(calls).toBe(12)

        const secondOut = outputFile()
        const second = yield* RunCommand.run({ ...options(simulator, input, secondOut), cache })
        expect((yield* simulator.metrics).received).toBe(calls)
        const results = readResults(secondOut)
        expect(results.length).toBe(12)
        expect(results.every((r) => r.status === "succeeded" && r.source === "cache" && r.attempts === 0 && r.cost === 0)).toBe(true)
        expect(results.map((r) => r.output)).toEqual(readResults(firstOut).map((r) => r.output))
        expect(second.report).toMatchObject({ succeeded: 12, attempts: 0, sources: { cache: 12 } })
        expect(second.report.cost.actual).toBe(0)
      })))

  it.live("--max-cost: once the budget is reached, items are skipped with reason budget and no call is made", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(prompts(5))
        const out = outputFile()
        const outcome = yield* RunCommand.run({ ...options(simulator, input, out), maxCost: 0.00000001 })
        const results = readResults(out)
        expect(results.map((r) => [r.status, r.reason, r.attempts])).toEqual(Array(5).fill(["skipped", "budget", 0]))
        expect((yield* simulator.metrics).received).toBe(0)
        expect(outcome.report.skippedBy.budget).toBe(5)
        expect(outcome.report.budgetExceeded?._tag).toBe("BudgetExceeded")
      })))

  it.live("--concurrency N bounds the calls in flight; --rpm paces their starts", () =>
    withSimulator({ latency: { baseMs: 30 } }, (simulator) =>
      Effect.gen(function*() {
        const fixed = yield* RunCommand.run({ ...options(simulator, inputFile(prompts(12)), outputFile()), concurrency: "2" })
        expect((yield* simulator.metrics).peakInFlight).toBe(2)
        expect(fixed.report.concurrency).toEqual([[0, 2]])

        yield* simulator.reset
        const paced = yield* RunCommand.run({ ...options(simulator, inputFile(prompts(5)), outputFile()), rpm: 600, concurrency: 8 })
        // 10 per second, evenly spaced: the 5th start comes ≥ 400 ms after the 1st.
        expect(paced.report.wallMs).toBeGreaterThanOrEqual(390)
        expect(paced.report.rateLimitWaitMs).toBeGreaterThan(0)
      })))

  it.live("adaptive concurrency (the default) starts at the gradient's initial limit", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const outcome = yield* RunCommand.run(options(simulator, inputFile(prompts(3)), outputFile()))
        expect(outcome.report.concurrency[0]).toEqual([0, 20])
        expect(outcome.report.succeeded).toBe(3)
      })))

  it.live("--max-attempts: a provider that always fails is tried exactly that often per item", () =>
    withSimulator({ failureRate: 1 }, (simulator) =>
      Effect.gen(function*() {
        const out = outputFile()
        const outcome = yield* RunCommand.run({ ...options(simulator, inputFile(prompts(3)), out), maxAttempts: 2 })
        const results = readResults(out)
        expect(results.every((r) => r.status === "failed" && r.attempts === 2)).toBe(true)
        expect(results.every((r) => r.error!.tag === "Transient" || r.error!.tag === "Overloaded")).toBe(true)
        expect((yield* simulator.metrics).received).toBe(6)
        expect(outcome.report.retries).toBe(3)
      })))

  it.live("--simulate starts an in-process simulator on a free port", () =>
    Effect.gen(function*() {
      const out = outputFile()
      const outcome = yield* RunCommand.run({
        input: inputFile(mixed),
        out,
        simulate: true,
        simulator: { latency: { baseMs: 2 }, failureRate: 0 },
        progress: "none"
      })
      expect(outcome.report).toMatchObject({ total: 7, succeeded: 4, failed: 3 })
      expect(outcome.simulator).toMatchObject({ received: 5, byStatus: { 200: 4, 400: 1 } })
      expect(readResults(out).length).toBe(7)
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layerUndici))))

  it.live("setup errors fail before any call, naming what is wrong", () =>
    withSimulator({}, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(prompts(2))
        const missing = join(dir, "missing.jsonl")
        const unwritable = join(dir, "no-such-dir", "out.jsonl")
        const message = <A, E extends { readonly message: string }, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.map(Effect.either(effect), (e) => (Either.isLeft(e) ? e.left.message : "no error"))
        const base = options(simulator, input, outputFile())
        expect(yield* message(RunCommand.run({ ...base, input: missing }))).toBe(`input file not found: ${missing}`)
        expect(yield* message(RunCommand.run({ ...base, out: unwritable }))).toBe(
          `cannot write the results to ${unwritable}: its directory does not exist`
        )
        expect(yield* message(RunCommand.run({ ...base, apiKeyEnv: "NO_SUCH_KEY" }))).toContain("environment variable NO_SUCH_KEY")
        expect(yield* message(RunCommand.run({ ...base, concurrency: "many" }))).toContain("--concurrency")
        expect(yield* message(RunCommand.run({ ...base, baseUrl: undefined }))).toContain("--base-url is required")
        expect(yield* message(RunCommand.run({ ...base, simulate: true }))).toContain("exclude each other")
        expect(yield* message(RunCommand.run({ ...base, model: "my-model", maxCost: 1 }))).toContain("prices")
        expect(yield* message(RunCommand.run({ ...base, cache: join(dir, "no-such-dir", "c.db") }))).toMatch(/^cannot open the cache /)
        expect((yield* simulator.metrics).received).toBe(0)
      })))

  it.live("--run-id: a stopped run resumes from its checkpoint; another input under the same id is refused", () =>
    withSimulator({ latency: { baseMs: 100 } }, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(prompts(30))
        const db = join(dir, `cp-${++files}.db`)
        const stop = yield* StopSignal.StopSignal
        const first = yield* Effect.fork(
          RunCommand.run({ ...options(simulator, input, outputFile()), concurrency: 3, runId: "r1", db })
        )
        yield* Effect.sleep("350 millis")
        yield* stop.request
        const stopped = yield* Fiber.join(first)
        expect(stopped.stopped).toBe(true)
        const done = stopped.report.succeeded
        expect(done).toBeGreaterThan(0)
        const callsBefore = (yield* simulator.metrics).received

        const out = outputFile()
        const resumed = yield* RunCommand.run({ ...options(simulator, input, out), concurrency: 3, runId: "r1", db }).pipe(
          Effect.provide(StopSignal.layerManual)
        )
        expect(resumed.report.sources).toMatchObject({ checkpoint: done, call: 30 - done })
        // Nothing that had succeeded was called again.
        expect((yield* simulator.metrics).received - callsBefore).toBe(30 - done)
        expect(readResults(out).map((r) => r.status)).toEqual(Array.from({ length: 30 }, () => "succeeded"))

        // Refused before any file is touched: the results file of the finished run stays as it was, byte for byte.
        const before = readFileSync(out)
        const refused = (input: string, model = "sim-chat") =>
          Effect.flip(RunCommand.run({ ...options(simulator, input, out), model, runId: "r1", db }).pipe(Effect.provide(StopSignal.layerManual)))
        const changed = inputFile(prompts(30).replace("number 3\"", "number three\""))
        expect((yield* refused(changed)).message).toMatch(
          new RegExp(`^run "r1" in ${escape(db)} was started with the input ${escape(input)}: line 4 of ${escape(changed)} is not the line it recorded`)
        )
        expect((yield* refused(inputFile(prompts(20)))).message).toContain("ends at line 20, and the run recorded 10 items past it")
        const otherModel = yield* refused(input, "gpt-4o-mini")
        expect(otherModel.message).toContain("was started with --model sim-chat, and this command has --model gpt-4o-mini")
        expect(otherModel.message).toContain(`delete it: effect-batch runs forget r1 --db ${db}`)
        expect(readFileSync(out)).toEqual(before)
        // Lines appended to the input only add work.
        const longer = yield* RunCommand.run({ ...options(simulator, inputFile(prompts(31)), outputFile()), concurrency: 3, runId: "r1", db })
          .pipe(Effect.provide(StopSignal.layerManual))
        expect(longer.report.sources).toMatchObject({ checkpoint: 30, call: 1 })
      }).pipe(Effect.provide(StopSignal.layerManual))))

  it.live("a first stop request lets calls in flight finish and skips the rest", () =>
    withSimulator({ latency: { baseMs: 300 } }, (simulator) =>
      Effect.gen(function*() {
        const input = inputFile(prompts(40))
        const out = outputFile()
        const stop = yield* StopSignal.StopSignal
        const run = yield* Effect.fork(RunCommand.run({ ...options(simulator, input, out), concurrency: 4, graceSeconds: 5 }))
        yield* Effect.sleep("450 millis")
        yield* stop.request
        const outcome = yield* Fiber.join(run)
        expect(outcome.stopped).toBe(true)
        const metrics = yield* simulator.metrics
        // Every call that had started was answered: nothing was cut off.
        expect(metrics.byStatus["499"] ?? 0).toBe(0)
        expect(outcome.report.succeeded).toBe(metrics.received)
        expect(outcome.report.succeeded).toBeGreaterThanOrEqual(4)
        expect(outcome.report.skippedBy.interrupted).toBe(40 - outcome.report.succeeded)
        expect(readResults(out).length).toBe(40)
      }).pipe(Effect.provide(StopSignal.layerManual))))

  it.live("a second stop request interrupts the calls in flight (their requests are aborted)", () =>
    withSimulator({ latency: { baseMs: 2_000 } }, (simulator) =>
      Effect.gen(function*() {
        const stop = yield* StopSignal.StopSignal
        const run = yield* Effect.fork(RunCommand.run({ ...options(simulator, inputFile(prompts(40)), outputFile()), concurrency: 4 }))
        yield* Effect.sleep("300 millis")
        yield* stop.request
        yield* Effect.sleep("100 millis")
        expect((yield* simulator.metrics).inFlight).toBe(4)
        yield* stop.request
        const exit = yield* Fiber.await(run)
        expect(Exit.isInterrupted(exit)).toBe(true)
        let metrics = yield* simulator.metrics
        for (let i = 0; i < 100 && metrics.inFlight > 0; i++) {
          yield* Effect.sleep("10 millis")
          metrics = yield* simulator.metrics
        }
        expect(metrics.byStatus["499"]).toBe(4)
      }).pipe(Effect.provide(StopSignal.layerManual))))
})

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
